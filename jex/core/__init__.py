"""jex.core: the pure, deterministic state machine.

No I/O, no clock, no randomness, no hash-ordered iteration where order
matters. Public surface: ``Engine``, the command and event Structs, and the
JSON edge ``Codec`` (used by the edges, never by the engine).
"""

from .codec import Codec, CommandError
from .commands import Command, decode_command, encode_command
from .engine import Engine, InvariantError

__all__ = ["Codec", "Command", "CommandError", "Engine", "InvariantError", "decode_command", "encode_command"]
