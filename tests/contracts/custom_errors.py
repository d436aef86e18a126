"""Match reverts by custom error name: brownie decodes them as "ErrorName: arg, arg"."""

import re

import brownie


def reverts_with(error_name: str, *args: object) -> brownie.test.managers.runner.RevertContextManager:
    """Expect a revert with the custom error `error_name` (and exactly `args`, when given)."""
    if args:
        rendered = ", ".join(str(arg).lower() if isinstance(arg, str) else str(arg) for arg in args)
        return brownie.reverts(revert_pattern=rf"(?i){re.escape(error_name)}: {re.escape(rendered)}")
    return brownie.reverts(revert_pattern=rf"{re.escape(error_name)}(:.*)?")
