"""Test-session setup."""

from arrow_rl.controllers.registry import checkpoint_loaders, register_checkpoint_loader

# An editable install made before the ``arrow_rl.checkpoint_loaders`` entry point existed lacks it
# (pip regenerates entry points only on reinstall); register the agents loader by hand then.
if "agents" not in checkpoint_loaders():
    from agents import load_checkpoint

    register_checkpoint_loader("agents", load_checkpoint)


# ---- why a test was rerun ------------------------------------------------------------------------
# pytest-rerunfailures reports a rerun as "R" and drops the first attempt's failure; the live tier
# allows one rerun, so without this a CI log would never say what went wrong the first time.
_RERUN_REASONS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.outcome == "rerun" and report.when == "call":
        _RERUN_REASONS.append((report.nodeid, str(report.longrepr)))


def pytest_terminal_summary(terminalreporter):
    if _RERUN_REASONS:
        terminalreporter.section("why tests were rerun (first attempts' failures)")
        for nodeid, text in _RERUN_REASONS:
            lines = text.splitlines()
            terminalreporter.write_line(f"{nodeid}:")
            for line in lines[-80:]:  # the assertion, its message, the router's story, the frames that led there
                terminalreporter.write_line("    " + line)
