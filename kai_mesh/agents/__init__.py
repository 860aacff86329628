"""The agent author's API (`Agent`, `AgentRequest`, `AgentRejected`) and the built-in agents.

Built-ins are registered under the `kai_mesh.agents` entry-point group, like third-party agents;
the runtime that runs them lives in `kai_mesh.runtime.agents.host`.
"""

from kai_mesh.agents.base import Agent, AgentRejected, AgentRequest, Isolation

__all__ = ["Agent", "AgentRejected", "AgentRequest", "Isolation"]
