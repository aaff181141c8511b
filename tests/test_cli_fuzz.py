"""Property-based test of the whole command line against hostile users (issue 21).

Hypothesis draws a command and its arguments, a plug-in problem file of a hostile kind (prints
at import, ``sys.exit``, ``os._exit``, a crash, a hang, a raising or hanging ``generate``, not a
problem at all, a directory), a config file and a run directory with records, and runs
``main`` on them. The contract, whatever was drawn:

* the exit status is 0, 1, 2 or 130, and there is no ``Traceback`` on stdout or stderr;
* with ``--json``, stdout is empty or one JSON document;
* nothing is written outside the results directory (Python's bytecode cache is off);
* no record of the prepared run is lost or duplicated.

Measurement is stubbed (an ``ok`` record at once): the properties are about the command line,
plug-in loading, paths and records. ``check`` runs for real (its rules in a child process, under
``--timeout``). The example budget is small in ``make test``; ``make fuzz`` runs many more
(``IFT_BENCH_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from suite.cli import main
from suite.executors import failure_record
from suite.point import Point, Settings
from suite.records import append_record

EXAMPLES = int(os.environ.get("IFT_BENCH_FUZZ_EXAMPLES", "10"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
EXAMPLE = (Path(__file__).resolve().parent.parent / "examples" / "reweighting.py").read_text()

#: plug-in files: what a module does at import, or how its problem misbehaves later
PLUGINS = {
    "sound": "",
    "prints": "print('PRINTED AT IMPORT')\nimport os as _os\n_os.write(1, b'RAW FD 1\\n')",
    "sys.exit(0)": "import sys as _s\n_s.exit(0)",
    "sys.exit(3)": "import sys as _s\n_s.exit(3)",
    "sys.exit(msg)": "import sys as _s\n_s.exit('goodbye')",
    "os._exit(0)": "import os as _os\n_os._exit(0)",
    "os._exit(7)": "import os as _os\n_os._exit(7)",
    "segfault": "import os as _os, signal as _sig\n_os.kill(_os.getpid(), _sig.SIGSEGV)",
    "raises": "raise RuntimeError('broken at import')",
    "syntax": "def (:",
    "hangs": "import time as _t\nwhile True:\n    _t.sleep(0.1)",
    "keyboard": "raise KeyboardInterrupt",
    "generate raises": ("class SampleReweighting(SampleReweighting):\n"
                        "    def generate(self, n, seed, options):\n"
                        "        raise ValueError('no data')"),
    "generate hangs": ("class SampleReweighting(SampleReweighting):\n"
                       "    def generate(self, n, seed, options):\n"
                       "        import time\n        time.sleep(600)"),
    "generate prints": ("class SampleReweighting(SampleReweighting):\n"
                        "    def generate(self, n, seed, options):\n"
                        "        print('in generate')\n"
                        "        return super().generate(n, seed, options)"),
    "chatty at run time": ("class SampleReweighting(SampleReweighting):\n"
                           "    def framework_reason(self, framework):\n"
                           "        print('framework_reason says hello')\n"
                           "        return super().framework_reason(framework)"),
    "step exits": ("class SampleReweighting(SampleReweighting):\n"
                   "    def step(self, xp, d, state, theta):\n"
                   "        raise SystemExit(4)"),
    "not a problem": "SampleReweighting = 42",
}
PLUGIN_FORMS = ("file", "module", "directory", "missing class")


def _plugin(root: Path, kind: str, form: str) -> str:
    """Write the plug-in and return the spec a user would type for it."""
    (root / "plug.py").write_text(EXAMPLE + "\n\n" + PLUGINS[kind] + "\n")
    if form == "module":
        return "plug:SampleReweighting"
    if form == "directory":
        (root / "adir.py").mkdir(exist_ok=True)
        return f"{root / 'adir.py'}:SampleReweighting"
    if form == "missing class":
        return f"{root / 'plug.py'}:Nope"
    return f"{root / 'plug.py'}:SampleReweighting"


#: values for size-like options, typed as text
values = st.sampled_from(["1", "2", "4", "0", "-1", "nan", "1e400", "x", "", "2.5", "100000"])
config_texts = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"name = 'c'\n", b"problems = 1\n"]),
    st.builds(lambda name, k: (f"name = {json.dumps(name)}\nproblems = ['PLUGIN']\n"
                               f"backends = ['unrolled']\nframeworks = ['torch']\nrepeats = 1\n"
                               f"[[grid]]\nn = [2]\nK = [{k}]\n").encode(),
              st.sampled_from(["c", "../up", "ok.1", ""]), st.sampled_from(["2", "0", "1, 2"])),
)


@st.composite
def commands(draw, spec: str, root: Path) -> list[str]:
    """A command line: a command, its required arguments, then a few drawn options."""
    run, other, results = root / "results" / "run", root / "results" / "other", root / "results"
    command = draw(st.sampled_from(["list", "point", "pair", "run", "run-config", "resume",
                                    "report", "compare", "gate", "check"]))
    base = {
        "list": ["list"] + draw(st.sampled_from([[], ["--json"]]))
                + draw(st.sampled_from([["--problem", spec], ["--problem", "gd," + spec], []])),
        "point": ["point", "--problem", spec, "--backend", "unrolled", "--framework", "torch",
                  "--n", draw(values), "--K", "2", "--repeats", "1"]
                 + draw(st.sampled_from([[], ["--json"]])),
        "pair": ["pair", "--problem", spec, "--framework", "torch", "--n", draw(values),
                 "--K", "2", "--blocks", "6", "--timeout", "10", "unrolled",
                 draw(st.sampled_from(["unrolled", "ift-direct", "nope"]))]
                + draw(st.sampled_from([[], ["--json"]])),
        "run": ["run", "--problem", draw(st.sampled_from([spec, "gd", f"gd,{spec}"])),
                "--backend", "unrolled", "--framework", "torch", "--n", draw(values), "--K",
                "2", "--repeats", "1", "--results", str(results), "--no-progress"]
               + draw(st.sampled_from([[], ["--run-id", "run"], ["--run-id", "new"],
                                       ["--allow-code-change"]])),
        "run-config": ["run", "--config", str(root / "c.toml"), "--results", str(results),
                       "--no-progress"],
        "resume": ["run", "--resume", draw(st.sampled_from([str(run), str(run / "records.jsonl"),
                                                            str(root)])), "--no-progress"]
                  + draw(st.sampled_from([[], ["--allow-code-change"], ["--jobs", "0"]])),
        "report": ["report", draw(st.sampled_from([str(run), str(other), str(root)]))],
        "compare": ["compare", draw(st.sampled_from([str(run), str(other)])),
                    draw(st.sampled_from([str(run), str(other), str(run / "records.jsonl")]))],
        "gate": ["gate", "--run", draw(st.sampled_from([str(run), str(other)]))],
        "check": ["check", spec, "--framework", "torch", "--n", "2", "--K", "2", "--max-K",
                  "20", "--timeout", "3"],
    }[command]
    return base


def _records(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1] if path.exists() else []


@contextlib.contextmanager
def _captured():
    """stdout and stderr of the body, at the file descriptors too (a plug-in may write to
    fd 1 directly): yields a dict filled with their text afterwards."""
    out: dict[str, str] = {}
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fo.fileno(), 1)
        os.dup2(fe.fileno(), 2)
        text_out = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), write_through=True)
        text_err = io.TextIOWrapper(os.fdopen(os.dup(2), "wb"), write_through=True)
        try:
            with contextlib.redirect_stdout(text_out), contextlib.redirect_stderr(text_err):
                yield out
        finally:
            text_out.close()
            text_err.close()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            for name, fh in (("out", fo), ("err", fe)):
                fh.seek(0)
                out[name] = fh.read().decode("utf-8", errors="replace")


@SETTINGS
@given(data=st.data(),
       # a sound or merely chatty plug-in half the time: the commands then get past loading
       kind=st.one_of(st.sampled_from(["sound", "prints", "generate prints"]),
                      st.sampled_from(sorted(PLUGINS))),
       form=st.sampled_from(["file", "file", "file", *PLUGIN_FORMS]), config=config_texts)
def test_the_command_line_keeps_its_contract_whatever_the_user_gives_it(data, kind, form,
                                                                        config):
    with tempfile.TemporaryDirectory(prefix="ift-fuzz-") as tmp, \
            pytest.MonkeyPatch.context() as mp:
        root = Path(tmp)
        mp.chdir(root)
        mp.syspath_prepend(str(root))  # a module spec resolves from the working directory
        mp.setattr(sys, "dont_write_bytecode", True)
        mp.setenv("PYTHONDONTWRITEBYTECODE", "1")
        mp.setenv("IFT_BENCH_IMPORT_TIMEOUT", "2")
        mp.setattr("suite.executors.local.LocalExecutor.run",
                   lambda self, point, s, *, dump_dir=None, slot=0:
                   failure_record(point, s, "ok", None))
        for name in [m for m in sys.modules if m == "plug"]:  # a module spec of an earlier
            mp.delitem(sys.modules, name)                       # example is not this one
        spec = _plugin(root, kind, form)
        (root / "c.toml").write_bytes(config.replace(b"PLUGIN", spec.encode()))
        results = root / "results"
        prepared = {}
        for name, ks in (("run", (2, 3)), ("other", (3, 4))):
            run = results / name
            run.mkdir(parents=True)
            for k in ks:
                append_record(run / "records.jsonl", failure_record(
                    Point("gd", "unrolled", "torch", n=2, K=k), Settings(repeats=1), "ok", None))
            (run / "meta.json").write_text(json.dumps({"config": {
                "name": name, "problems": ["gd"], "backends": ["unrolled"],
                "frameworks": ["torch"], "repeats": 1, "grid": [{"n": [2], "K": list(ks)}]}}))
            prepared[name] = _records(run / "records.jsonl")
        argv = data.draw(commands(spec, root))
        before = {p for p in root.rglob("*") if results not in p.parents}

        with _captured() as out:
            status = main(argv)

        event(f"{argv[0]} exit {status}")  # the spread, with --hypothesis-show-statistics
        assert status in (0, 1, 2, 130), (argv, status, out)
        assert "Traceback" not in out["out"] + out["err"], (argv, out)
        if status == 2:
            errors = [line for line in out["err"].splitlines()
                      if line.startswith("ift-bench: error:")]
            assert len(errors) == 1, (argv, out)
        if "--json" in argv and out["out"].strip():
            json.loads(out["out"])
        after = {p for p in root.rglob("*") if results not in p.parents}
        assert after == before, (argv, after ^ before)
        for name, lines in prepared.items():
            now = _records(results / name / "records.jsonl")
            assert now[:len(lines)] == lines, (argv, name)  # nothing lost or rewritten
            keys = [json.loads(line)["point_key"] for line in now]
            assert len(keys) == len(set(keys)), (argv, name)  # nothing duplicated
