"""Tasks (issue 12, item 5): one unit of work for an agent with a capability, kept in the `tasks`
area of the replicated state and run by exactly one capable node. Pure rules; the runtime
(kai_mesh/runtime/tasks) writes claims and results and runs the agent."""
