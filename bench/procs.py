"""Child processes of the benchmarks (bench/run.py, bench/cluster.py): each in its own process
group, its output in two files of the run's work directory, and every one stopped on every
exit path of the run. Python 3 standard library only."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


class BenchError(Exception):
    pass


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupt_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so that a run's cleanup (stopping
    its processes, removing what it created) runs whatever stops it. SIGINT too: a background
    job may have inherited it ignored."""
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)


def ignore_signals() -> None:
    """From here on a run's cleanup must not be interrupted."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class Guarded:
    """The body of a run, `with Guarded(procs, results, log) as run:`. An interruption or a
    failure (BenchError, a failed command, an OS error) ends the body: it is logged, noted in
    results["errors"], and `run.status` becomes 130 or 1 (the body may set 1 itself). Whatever
    happened, stop signals are then ignored, every process is stopped, and the end is noted in
    results["meta"]."""

    def __init__(self, procs: "Procs", results: dict, log):
        self.procs, self.results, self.log = procs, results, log
        self.status = 0
        self.started = time.time()

    def __enter__(self) -> "Guarded":
        return self

    def __exit__(self, kind, error, _traceback) -> bool:
        handled = kind is not None and issubclass(
            kind, (KeyboardInterrupt, BenchError, subprocess.SubprocessError, OSError))
        if handled:
            interrupted = issubclass(kind, KeyboardInterrupt)
            self.log("interrupted" if interrupted else f"failed: {error}")
            self.results.setdefault("errors", []).append("interrupted" if interrupted else str(error))
            self.status = 130 if interrupted else 1
        ignore_signals()
        self.procs.stop_all()
        meta = self.results["meta"]
        meta["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        meta["duration_s"] = round(time.time() - self.started, 1)
        meta["load_end"] = round(os.getloadavg()[0], 2)
        return handled


def run_main(main, script: str) -> None:
    """A benchmark script's entry point: exits with main()'s status, or with 1 and the message
    of a BenchError."""
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"{script}: {error}", file=sys.stderr)
        sys.exit(1)


def publish(results: dict, out_dir: Path, write_report, workdir: Path, keep_logs: bool) -> None:
    """Writes a run's results.json and report.md (printed too), then removes its work directory
    unless its logs are to be kept."""
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(write_report(results, out_dir))
    if keep_logs:
        print(f"logs kept in {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def prometheus_samples(body: str, prefixes: tuple[str, ...] = ("",)) -> dict[str, float]:
    """`series{labels}` -> value of a /metrics page, for the series whose name starts with one of
    `prefixes` (every series by default)."""
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#") and line.startswith(prefixes):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def read_jsonl(path: Path) -> list[dict]:
    """The JSON lines of a file (a line being written is skipped)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


class Proc:
    """One child process in its own process group, its output in two files."""

    def __init__(self, name: str, popen: subprocess.Popen, out: Path, err: Path):
        self.name, self.popen, self.out, self.err = name, popen, out, err
        # SIGSTOPped by the benchmark: it would see a SIGTERM only once continued.
        self.sigstopped = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def lines(self) -> list[str]:
        try:
            return self.out.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def json_lines(self) -> list[dict]:
        return read_jsonl(self.out)


class Procs:
    """Every process a run started, so that every exit path can stop all of them. `env` is
    added to the environment of each."""

    def __init__(self, workdir: Path, env: dict | None = None):
        self.workdir = workdir
        self.env = env or {}
        self.procs: list[Proc] = []
        self.seq = 0

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> Proc:
        self.seq += 1
        out = self.workdir / f"{self.seq:03d}-{name}.out"
        err = self.workdir / f"{self.seq:03d}-{name}.err"
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out.open("w"), stderr=err.open("w"),
            env={**os.environ, **self.env, **(env or {})},
            start_new_session=True,  # its own process group: stopped as a group
        )
        proc = Proc(name, popen, out, err)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        """SIGTERM to its group, SIGKILL after `grace` (at once for a SIGSTOPped one)."""
        if proc.alive():
            first = signal.SIGKILL if proc.sigstopped else signal.SIGTERM
            try:
                os.killpg(proc.pid, first)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait(timeout=10)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc, grace=3.0)

    def wait_ready(self, procs: list[Proc], timeout: float, what: str) -> list[dict]:
        """Waits for one `{"event": "ready"}` line from each process."""
        return self.wait_for_event(procs, "ready", timeout, f"{what} not ready")

    @staticmethod
    def wait_for_event(procs: list[Proc], event: str, timeout: float, what: str,
                       poll: float = 0.2) -> list[dict]:
        """The first `{"event": EVENT}` line of each process, once every one has printed it;
        a BenchError if one exits first or `timeout` s pass (`what` names the wait)."""
        deadline = time.time() + timeout
        while True:
            lines = []
            for proc in procs:
                found = [j for j in proc.json_lines() if j.get("event") == event]
                if not found and not proc.alive():
                    raise BenchError(f"{proc.name} exited before its {event} line: {proc.err.read_text(errors='replace')[-2000:]}")
                lines.append(found[0] if found else None)
            if all(lines):
                return lines
            if time.time() > deadline:
                raise BenchError(f"{what} within {timeout:.0f} s")
            time.sleep(poll)
