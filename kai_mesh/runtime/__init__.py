"""The trio shell: drives the sans-IO core, owns sockets, processes, threads and clocks."""
