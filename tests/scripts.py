"""What the end-to-end tests of the console scripts share: finding an installed script, running it, and reading its errors."""
import json, os, shutil, subprocess, sys, tempfile
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
ENV.pop("DML_NB_DEBUG", None)

def script(name:str) -> str:
    "The path of the installed console script `name` (next to this Python first)."
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None: pytest.fail(f"console script {name} is not installed: run pip install -e .")
    return path

def start(name:str, *args, cwd=None) -> subprocess.Popen:
    "Start the console script `name` with `args`, its output captured."
    return subprocess.Popen([script(name), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=cwd)

def finish(proc:subprocess.Popen, timeout:int=300) -> subprocess.CompletedProcess:
    "Wait for a started script; its status and output."
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

def execute(name:str, *args, cwd=None) -> subprocess.CompletedProcess:
    "Run the console script `name` to its end, whatever its status."
    return finish(start(name, *args, cwd=cwd))

def ok(proc:subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    "`proc`, which must have succeeded."
    assert proc.returncode == 0, f"{' '.join(map(str, proc.args))} failed with status {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc

def run(name:str, *args, cwd=None) -> subprocess.CompletedProcess:
    "Run a console script and require success."
    return ok(execute(name, *args, cwd=cwd))

def run_many(cases:dict, workers:int=4, cwd=None, timeout:int=900) -> dict:
    """Run independent commands `{case: (script, *args)}` a few at a time; their results by case.
    Each is a process of its own, forked by fork_runner.py from one interpreter that imported dml_nb once."""
    with tempfile.TemporaryDirectory() as out:
        job = dict(workers=workers, out=out, cases={case: dict(argv=[script(name), *map(str, args)], cwd=None if cwd is None else str(cwd))
                                                    for case, (name, *args) in cases.items()})
        runner = subprocess.run([sys.executable, str(Path(__file__).with_name("fork_runner.py"))], input=json.dumps(job),
                                capture_output=True, text=True, env=ENV, timeout=timeout)
        assert runner.returncode == 0, f"fork_runner.py failed:\n{runner.stdout}\n{runner.stderr}"
        status = json.loads(runner.stdout)
        read = lambda case, stream: (Path(out) / f"{case}.{stream}").read_text()
        return {case: subprocess.CompletedProcess(job["cases"][case]["argv"], status[case], read(case, "stdout"), read(case, "stderr"))
                for case in cases}

def check_user_error(proc:subprocess.CompletedProcess, *contains:str, prog:str|None=None):
    "A user error: status 1, no traceback, exactly one `<prog>: error: ...` line on stderr containing each of `contains`."
    assert proc.returncode == 1, f"status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr
    if prog: assert errors[0].startswith(f"{prog}: error: "), errors[0]
    for text in contains: assert text in errors[0], errors[0]

def temporary_files(folder:Path) -> list:
    "Files an interrupted atomic write would leave behind: hidden `.NAME-*` stages and `*.tmp` files."
    return [p for p in Path(folder).rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]

def write_digits(folder:Path, classes:dict, per_class:int=20, offset:int=0, file_name:str="{i:03d}.png") -> Path:
    "PNG class folders of scikit-learn's 8x8 digits: `folder/<class>/<file_name>`, for `classes` mapping a (nested) folder name to a digit."
    from sklearn.datasets import load_digits
    digits = load_digits()
    for name, digit in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(digits.images[digits.target == digit][offset:offset + per_class]):
            Image.fromarray(np.round(image * 255 / 16).astype(np.uint8)).save(folder / name / file_name.format(i=i, digit=digit))
    return folder
