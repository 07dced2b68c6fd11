"""Run many console-script commands from one interpreter that has imported dml_nb once, forking a child per command.

Importing torch, fastai and timm costs about ten seconds of CPU per process; an error case needs a fraction of a second
after that. Each child is still a process of its own, started by the installed script's entry point with its own
`sys.argv`, working folder, standard output and error and exit status, as `scripts.run_many` gives them back.

Reads `{"cases": {case: {"argv": [script path, *args], "cwd": folder or null}}, "workers": n, "out": folder}` as JSON on
stdin; writes `{case: exit status}` as JSON on stdout, and each case's output to `out/<case>.stdout` and `.stderr`."""
import json, os, sys, traceback
from importlib.metadata import entry_points

def _entry(name:str):
    (point,) = entry_points(group="console_scripts", name=name)
    return point.load()

def _child(argv:list, cwd:str|None, out:str) -> int:
    "Run one command in this (forked) process; its exit status."
    with open(out + ".stdout", "w") as stdout, open(out + ".stderr", "w") as stderr:
        os.dup2(stdout.fileno(), 1); os.dup2(stderr.fileno(), 2)
    sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
    if cwd: os.chdir(cwd)
    sys.argv = list(argv)
    try: _entry(os.path.basename(argv[0]))(); status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if isinstance(stop.code, str): print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc(); status = 1
    sys.stdout.flush(); sys.stderr.flush()
    return status

def main():
    job = json.load(sys.stdin)
    names = {os.path.basename(case["argv"][0]) for case in job["cases"].values()}
    for name in names: _entry(name)  # import every script's modules before the first fork
    import dml_nb.pipeline  # noqa: F401  (what the scripts import when they run)
    pending, running, status = list(job["cases"].items()), {}, {}
    while pending or running:
        while pending and len(running) < job["workers"]:
            case, command = pending.pop(0)
            pid = os.fork()
            if pid == 0: os._exit(_child(command["argv"], command.get("cwd"), os.path.join(job["out"], case)))
            running[pid] = case
        pid, code = os.wait()
        status[running.pop(pid)] = os.waitstatus_to_exitcode(code)
    json.dump(status, sys.stdout)

if __name__ == "__main__": main()
