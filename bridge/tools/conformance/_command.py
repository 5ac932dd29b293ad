"""`flow-bridge conformance`: run the checks against a command and report each.

`handshake` runs first and alone: it also warms up examples that build themselves on
their first run. If it fails in a way that makes every other check meaningless (no
`ready` at all, garbage on stdout, the child exits), the other checks are reported as
not run instead of timing out one by one. The rest run concurrently, bounded by `jobs`.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio
import click

from flow_bridge.child import StartError, check_startable
from flow_bridge.core import ConfigError, default_config_file, load_service
from flow_bridge.tools._exit import Exit, fail
from flow_bridge.tools._params import Duration, ShownDefault

from ._checks import CHECK_NAMES, PROTOCOL_CHECK_NAMES, Check, checks_for
from ._driver import DEFAULT_TIMEOUT, GRACE, CheckFailed, Child, Contract, open_child

# How many checks run at once by default: each is one small child, mostly waiting.
DEFAULT_JOBS = 8


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    passed: bool
    reason: str = ""
    seconds: float = 0.0
    details: tuple[str, ...] = ()

    def line(self) -> str:
        return f"PASS {self.name}" if self.passed else f"FAIL {self.name}: {self.reason}"


async def run_check(argv: Sequence[str], check: Check, timeout: float, contract: Contract,
                    env: Mapping[str, str] | None = None) -> tuple[CheckResult, bool]:
    """Run one check in a fresh child (`env`: extra variables for it); returns its result and
    whether a failure was fatal."""
    started = time.monotonic()
    details: list[str] = []
    fatal = False
    passed = True
    reason = ""
    # A safety net over the per-step limits, so that no check can hang the suite.
    budget = 2 * timeout + 2 * GRACE + 10
    seen: list[Child] = []

    async def body(child: Child) -> None:
        seen.append(child)
        details.extend(await check.run(child) or [])
        await child.settle()

    try:
        with anyio.fail_after(budget):
            await open_child(argv, timeout, contract, body, env)
    except CheckFailed as exc:
        passed, reason, fatal = False, exc.reason, exc.fatal
    except TimeoutError:
        passed, reason = False, f"the check did not finish within {budget:g} s"
    except StartError:
        raise
    except Exception as exc:  # a bug in the suite itself: say so rather than blame the child
        passed = False
        reason = f"internal error in the conformance suite ({type(exc).__name__}: {exc}); please report it"
        details.extend(traceback.format_exc().splitlines())
    if seen:
        details.extend(f"stderr: {line}" for line in seen[0].stderr_lines())
    return CheckResult(check.name, passed, reason, time.monotonic() - started, tuple(details)), fatal


async def run_suite(
    argv: Sequence[str],
    *,
    contract: Contract = Contract.ECHO,
    timeout: float = DEFAULT_TIMEOUT,
    jobs: int = DEFAULT_JOBS,
    only: Sequence[str] = (),
    on_result: Callable[[CheckResult], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[CheckResult]:
    """Run the checks against the command `argv`; `on_result` sees results in check order.

    `env`: variables the child gets on top of ours, as a plugin's `env` in the config.

    Raises StartError, with the runtime's own diagnosis, when argv cannot be started.
    """
    if not argv:
        raise StartError("no command given: put the handler's command after --")
    check_startable(argv)
    checks = [c for c in checks_for(contract) if not only or c.name in only]
    results: list[CheckResult | None] = [None] * len(checks)
    shown = 0

    def record(index: int, result: CheckResult) -> None:
        nonlocal shown
        results[index] = result
        while shown < len(results) and (ready := results[shown]) is not None:
            if on_result is not None:
                on_result(ready)
            shown += 1

    start_index = 0
    if checks and checks[0].name == "handshake":
        result, fatal = await run_check(argv, checks[0], timeout, contract, env)
        record(0, result)
        start_index = 1
        if fatal:
            for index in range(1, len(checks)):
                record(index, CheckResult(checks[index].name, False, "not run: the handshake failed (see above)"))
            return [r for r in results if r is not None]

    limiter = anyio.CapacityLimiter(max(1, jobs))
    start_error: StartError | None = None

    async def one(index: int) -> None:
        nonlocal start_error
        async with limiter:
            if start_error is not None:
                return
            try:
                result, _ = await run_check(argv, checks[index], timeout, contract, env)
            except StartError as exc:  # kept out of the task group's ExceptionGroup
                start_error = exc
                return
        record(index, result)

    async with anyio.create_task_group() as tg:
        for index in range(start_index, len(checks)):
            tg.start_soon(one, index)
    if start_error is not None:
        raise start_error
    return [r for r in results if r is not None]


def _plugin_command(plugin: str, config_file: str | None,
                    cmd: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The command and extra environment of one plugin of a service config, for `conformance --plugin NAME`."""
    if cmd:
        fail(f"--plugin {plugin} checks that plugin's own command from the config: drop the one after `--`",
             Exit.USAGE)
    try:
        service = load_service(config_file or default_config_file())
    except ConfigError as exc:
        fail(str(exc), Exit.USAGE)
    chosen = next((settings for settings in service if settings.name == plugin), None)
    if chosen is None:
        names = ", ".join(settings.name or "?" for settings in service)
        fail(f"--plugin {plugin}: no plugin of that name in the config; it has: {names}", Exit.USAGE)
    if chosen.exec_mode:
        fail(f"{plugin} is an exec-mode plugin: its script does not speak the protocol, so there is nothing to "
             f"check; try it with `flow-bridge call --plugin {plugin}`", Exit.USAGE)
    if not chosen.command:
        fail(f"{plugin} has no command in the config: give its entry a command", Exit.USAGE)
    return chosen.command, dict(chosen.env)


def summary(results: Sequence[CheckResult]) -> str:
    passed = sum(r.passed for r in results)
    return f"{passed} passed, {len(results) - passed} failed"


@click.command(
    "conformance",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog="Checks: " + ", ".join(CHECK_NAMES) + ". With --protocol-only: " + ", ".join(PROTOCOL_CHECK_NAMES) + ".",
)
@click.option("--protocol-only", is_flag=True,
              help="Run only the checks that need no echo contract, for any handler (one made by init, say).")
@click.option("--timeout", cls=ShownDefault, type=Duration(seconds=True), default=DEFAULT_TIMEOUT,
              show_default=f"{DEFAULT_TIMEOUT:g}s",
              help="How long the child may take to answer hello, and to answer each request (like 10s, 1m).")
@click.option("--verbose", "-v", is_flag=True, help="Show timings, the ready frame and the child's stderr.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=DEFAULT_JOBS, show_default=True,
              help="How many checks run at once.")
@click.option("--check", "only", multiple=True, type=click.Choice(CHECK_NAMES), metavar="NAME",
              help="Run only this check (repeatable).")
@click.option("--plugin", default=None, metavar="NAME",
              help="Check this plugin's command from the config's plugins: list instead of CMD.")
@click.option("--config", "config_file", type=click.Path(exists=True), envvar="FLOW_BRIDGE_CONFIG", show_envvar=True,
              default=None, show_default="./config.yml, if there", help="The service config that --plugin reads.")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS...]")
def conformance_command(protocol_only: bool, timeout: float, verbose: bool, jobs: int,
                        only: tuple[str, ...], plugin: str | None, config_file: str | None,
                        cmd: tuple[str, ...]) -> None:
    """Check that CMD speaks the stdio protocol, as an echo handler (SPEC.md section 7).

    Each check starts CMD afresh and prints PASS or FAIL with a reason. --protocol-only
    grades any handler on what the protocol alone promises. Exit status: 0 when every
    check passed, 1 when one failed, 2 when CMD cannot be started.
    """
    env: dict[str, str] = {}
    if plugin is not None:
        cmd, env = _plugin_command(plugin, config_file, cmd)
    contract = Contract.PROTOCOL if protocol_only else Contract.ECHO
    unfit = [name for name in only if name not in PROTOCOL_CHECK_NAMES] if protocol_only else []
    if unfit:
        fail(f"--check {unfit[0]} needs the echo contract, so it cannot run with --protocol-only", Exit.USAGE)

    def show(result: CheckResult) -> None:
        click.echo(result.line() + (f"  ({result.seconds:.2f} s)" if verbose else ""))
        if verbose:
            for line in result.details:
                click.echo(f"    {line}")

    try:
        results = anyio.run(lambda: run_suite(cmd, contract=contract, timeout=timeout, jobs=jobs, only=only,
                                               on_result=show, env=env))
    except StartError as exc:
        fail(str(exc), Exit.USAGE)
    click.echo(summary(results))
    if not protocol_only and not all(r.passed for r in results):
        click.echo("A handler of your own, not an echo handler (SPEC.md section 7)? Check it with --protocol-only.",
                   err=True)
    raise SystemExit(Exit.OK if all(r.passed for r in results) else Exit.FAILED)


__all__ = ["CheckResult", "conformance_command", "run_suite", "summary"]
