"""Which `pm` commands the demo drives, and whether each has landed in this checkout.

A phase whose command is missing is reported as not available, never simulated: the check reads
the options of the real command in `pm`'s own command tree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Needed:
    phase: str
    command: tuple[str, ...]
    options: frozenset[str]

    @property
    def usage(self) -> str:
        return f"pm {' '.join(self.command)} {' '.join(sorted(self.options))}"


NEEDED = (
    Needed(
        "stage workers on-chain",
        ("worker", "run"),
        frozenset({"--model", "--stage", "--key-file", "--cheat"}),
    ),
    Needed("driver", ("driver", "run"), frozenset({"--model", "--rounds", "--initial-peers", "--json"})),
    Needed("verifier", ("verifier", "run"), frozenset({"--model", "--initial-peers", "--probability"})),
    Needed("gateway", ("gateway", "run"), frozenset({"--model", "--port", "--initial-peers"})),
    Needed("paid inference", ("infer",), frozenset({"--model", "--prompt", "--gateway", "--json"})),
    Needed("revenue claims", ("claim",), frozenset({"--model", "--key-file", "--json"})),
)


def options_of(command: tuple[str, ...]) -> set[str] | None:
    """The option names of `pm <command>`, or None if there is no such command."""
    from typer.main import get_command

    from offchain.cli import app

    node = get_command(app)
    for name in command:
        node = getattr(node, "commands", {}).get(name)
        if node is None:
            return None
    return {option for param in node.params for option in param.opts}


def missing_commands() -> list[Needed]:
    """The commands (with the options the demo uses) this checkout does not have yet."""
    return [need for need in NEEDED if not need.options <= (options_of(need.command) or set())]
