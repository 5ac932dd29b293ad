"""click parameter types that several commands share, so that each is read the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from flow_bridge.core import check_plugin_name, parse_duration, parse_limit, parse_positive_duration

if TYPE_CHECKING:  # click 8.4 types ParamType as generic; older 8.x cannot subscript it at run time
    _TextParam = click.ParamType[str]
else:
    _TextParam = click.ParamType


class Duration(_TextParam):
    """15s, 1m30s, 500ms, PT15S or seconds; checked here, parsed again by the settings loader.

    The value passes on as the text the user wrote so that the loader, which also reads the
    file and the environment, reports every source the same way.
    """

    name = "duration"

    def __init__(self, *, may_be_none: bool = False, may_be_zero: bool = False, seconds: bool = False) -> None:
        self.may_be_none = may_be_none
        self.may_be_zero = may_be_zero
        self.seconds = seconds  # give the command the number of seconds rather than the text

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float) and self.seconds:
            return value  # a default given in seconds
        try:
            if self.may_be_none:
                parsed = parse_limit(value)
            elif self.may_be_zero:
                parsed = parse_duration(value)
            else:
                parsed = parse_positive_duration(value)
        except ValueError as exc:  # also a duration over a year (core's LONGEST)
            self.fail(str(exc), param, ctx)
        return parsed if self.seconds else value

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION"


class ShownDefault(click.Option):
    """An option whose show_default text is shown bare when it is a value the option takes
    (`default: 600s`, as click shows a real default) and in click's parentheses when it
    describes one (`default: (the name the handler declares)`): one style in every --help.

    Settings options keep their click default None, so that the config file and the
    environment can still set them; show_default is then all that --help has to show."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        shown = self.show_default
        if record is None or not isinstance(shown, str):
            return record
        try:
            self.type.convert(shown, self, ctx)
        except click.BadParameter:
            return record  # a description: parentheses
        names, text = record
        return names, text.replace(f"default: ({shown})", f"default: {shown}")


class PluginName(_TextParam):
    name = "name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return check_plugin_name(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


__all__ = ["Duration", "PluginName", "ShownDefault"]
