"""What both ends of the control socket raise: the node to answer with an error, the client
when it gets one (or finds no node). Here, not in the client, so that the node never imports the
CLI's client."""

from __future__ import annotations

from kai_mesh.core.errors import KaiMeshError


class ControlError(KaiMeshError):
    """The node answered a control request with an error.

    Handlers on the node raise it to send that error; clients receive it from `call`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class NodeNotRunning(KaiMeshError):
    """No node answers on the control socket: start one with `kai-mesh run`."""
