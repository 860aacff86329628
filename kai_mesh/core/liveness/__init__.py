"""Who is alive: the SWIM/Lifeguard failure detector as a pure machine."""
