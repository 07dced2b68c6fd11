#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb, or with --check fail if README.md differs from it.

nbdev_readme does this through Quarto, which cannot be installed on the project's build machines;
this script keeps the two in step without it: markdown cells as they are, code cells as Python blocks,
text outputs as plain blocks, hidden cells and directives left out.
"""
import sys, json
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def cell_text(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]

def render(nb_path=root/"nbs"/"index.ipynb") -> str:
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for cell in nb["cells"]:
        text = cell_text(cell)
        if cell["cell_type"] == "markdown": parts.append(text.strip()); continue
        lines = text.splitlines()
        directives = [l for l in lines if l.startswith("#|")]
        if any(d.split()[1:2] in (["hide"], ["exporti"], ["export"]) for d in directives) or any("include: false" in d for d in directives): continue
        code = "\n".join(l for l in lines if not l.startswith("#|")).strip()
        if code: parts.append(f"```python\n{code}\n```")
        for out in cell.get("outputs", []):
            txt = out.get("text") or out.get("data", {}).get("text/plain")
            if txt: parts.append("```\n" + ("".join(txt) if isinstance(txt, list) else txt).rstrip() + "\n```")
    return "<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->\n\n" + "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    readme, text = root/"README.md", render()
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit("README.md is out of step with nbs/index.ipynb: run `python tools/readme.py` and commit")
        print("README.md matches nbs/index.ipynb")
    else:
        readme.write_text(text); print("wrote", readme)
