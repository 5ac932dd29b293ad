"""`flow-bridge init`: a working plugin project from the templates beside this module."""
from __future__ import annotations

from ._scaffold import LANGS as LANGS
from ._scaffold import ScaffoldError as ScaffoldError
from ._scaffold import check_plugin_name as check_plugin_name
from ._scaffold import init_command as init_command
from ._scaffold import installed_distribution as installed_distribution
from ._scaffold import installed_from as installed_from
from ._scaffold import render as render
from ._scaffold import running_from_checkout as running_from_checkout

__all__ = [
    "LANGS", "ScaffoldError", "check_plugin_name", "init_command", "installed_distribution", "installed_from",
    "render", "running_from_checkout",
]
