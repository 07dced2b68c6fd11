"""The rendered documentation site (`_docs/`, written by `nbdev_docs`), served on 127.0.0.1 and read page by page in
headless Chromium: what a reader would trip over (tracebacks, raw Markdown or LaTeX, broken images and links, API
entries missing) fails here. test.sh renders the site and installs Debian's chromium and chromium-driver first."""
import configparser, functools, html, http.server, importlib, inspect, os, re, shutil, threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse
import pytest

root = Path(__file__).resolve().parent.parent
site = root/"_docs"

def settings():
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(root/"settings.ini"); return cfg["DEFAULT"]

PUBLISHED = settings()["doc_host"].rstrip("/") + settings()["doc_baseurl"].rstrip("/")  # links here are internal
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

def _need_site():
    if (site/"index.html").exists(): return
    message = "no rendered site in _docs/: run nbdev_docs (test.sh does, with Quarto from ../shared/tools/quarto)"
    if os.environ.get("DML_NB_REQUIRE_DOCS"): pytest.fail(message)
    pytest.skip(message)

def pages() -> list[Path]: return sorted(p for p in site.rglob("*.html") if "site_libs" not in p.parts)

def page_of(notebook:Path) -> str:
    "The page nbdev renders a notebook to: its name without the number prefix (`00_core.ipynb` -> `core.html`)."
    return re.sub(r"^\d+[a-zA-Z0-9]*_", "", notebook.stem.lower()) + ".html"

@functools.lru_cache(None)
def anchors(page:Path) -> set:
    "The ids and names a link's #fragment may point to in `page`."
    return set(re.findall(r'\b(?:id|name)="([^"]+)"', page.read_text(errors="replace")))

def local_target(href:str, origin:str) -> tuple[Path, str]|None:
    "The file and fragment a link leads to inside the site, or None for a link elsewhere."
    url, fragment = urldefrag(href)
    for base in (origin, PUBLISHED):
        if url.startswith(base + "/") or url == base:
            path = unquote(urlparse(url[len(base):] or "/").path).lstrip("/")
            target = site/path
            if path == "" or path.endswith("/") or target.is_dir(): target = target/"index.html"
            return target, unquote(fragment)
    return None

# visible text that pandoc should have turned into markup: links, emphasis, headings, tables, TeX
RAW = re.compile(r"\]\(|\*\*\w|^#{1,6} |\|\s*-{3,}|\$\$|\\(?:frac|mathcal|mathbb|sum|lVert|operatorname|begin|left)\b|`\w")
TEXT_OUTSIDE_CODE = """
const out = [], skip = 'PRE,CODE,SCRIPT,STYLE,MJX-CONTAINER,MATH';
const walk = document.createTreeWalker(document.querySelector('main') || document.body, NodeFilter.SHOW_TEXT);
for (let n = walk.nextNode(); n; n = walk.nextNode()) {
  let e = n.parentElement, inside = false;
  for (; e; e = e.parentElement) if (skip.includes(e.tagName) || e.classList.contains('math') || e.classList.contains('sourceCode')) { inside = true; break; }
  if (!inside && n.textContent.trim()) out.push(n.textContent);
}
return out;"""
BROKEN_IMAGES = "return Array.from(document.images).filter(i => i.src.startsWith(location.origin) && !(i.complete && i.naturalWidth > 0)).map(i => i.src);"
HEADINGS = "return Array.from(document.querySelectorAll('h1, h2, h3, h4')).map(h => h.textContent.trim());"
LINKS = "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);"

@pytest.fixture(scope="module")
def server():
    _need_site()
    handler = functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}), directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()

@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no chromium/chromedriver: install Debian's chromium and chromium-driver (test.sh does with apt-get)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()

def page_problems(driver, origin:str, page:Path) -> list[str]:
    "Everything wrong with one page, as it shows in the browser."
    driver.get(f"{origin}/{page.relative_to(site).as_posix()}")
    problems = []
    if not driver.title.strip(): problems.append("no title")
    if not driver.find_elements("id", "quarto-sidebar"): problems.append("no sidebar")
    text = driver.find_element("tag name", "body").text
    if "Traceback (most recent call last)" in text: problems.append("a Python traceback")
    # a link nbdev wrote into a code block (an API signature's parameter comments) shows as Markdown source
    problems += [f"raw Markdown link: {line.strip()[:100]!r}" for line in text.splitlines() if re.search(r"\]\(https?://", line)]
    for chunk in driver.execute_script(TEXT_OUTSIDE_CODE):
        for line in chunk.splitlines():
            if RAW.search(line): problems.append(f"raw Markdown or TeX: {line.strip()[:100]!r}")
    problems += [f"heading ends in ' -': {h!r}" for h in driver.execute_script(HEADINGS) if h.endswith(" -")]
    problems += [f"image does not load: {src}" for src in driver.execute_script(BROKEN_IMAGES)]
    for href in sorted(set(driver.execute_script(LINKS))):
        target = local_target(href, origin)
        if target is None: continue  # another site: not checked here
        file, fragment = target
        if not file.exists(): problems.append(f"link to a missing page: {href}")
        elif fragment and file.suffix == ".html" and fragment not in anchors(file): problems.append(f"link to a missing anchor: {href}")
    return problems

def test_every_page_reads_well(server, browser):
    problems = [f"{page.relative_to(site)}: {p}" for page in pages() for p in page_problems(browser, server, page)]
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:80])

def test_every_chapter_is_a_page_in_the_sidebar():
    _need_site()
    notebooks = sorted((root/"nbs").glob("*.ipynb"))
    names = [page_of(nb) for nb in notebooks]
    assert len(set(names)) == len(names), f"two notebooks render to one page: {sorted(n for n in names if names.count(n) > 1)}"
    missing = [nb.name for nb in notebooks if not (site/page_of(nb)).exists()]
    assert not missing, f"notebooks without a page: {missing}"
    sidebar = (site/"index.html").read_text()
    unlisted = [nb.name for nb in notebooks if nb.stem != "index" and f'href="./{page_of(nb)}"' not in sidebar]
    assert not unlisted, f"pages missing from the sidebar: {unlisted}"

def _documented_names():
    "(page, name, first docstring line, is a class) of every public function and class each module defines."
    for module in sorted(m.stem for m in (root/"dml_nb").glob("*.py") if not m.stem.startswith("_")):
        mod = importlib.import_module(f"dml_nb.{module}")
        nb = next(page_of(p) for p in (root/"nbs").glob("*.ipynb") if re.search(rf"#\|\s*default_exp\s+{module}\b", p.read_text()))
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == mod.__name__:
                yield nb, name, (inspect.getdoc(obj) or "").split("\n")[0], inspect.isclass(obj)

@functools.lru_cache(None)
def page_text(page:Path) -> str: return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))

def test_every_public_name_is_documented():
    "Each public function and class has an API entry (nbdev's anchor) on its chapter's page, with its docstring; a class's signature says class."
    _need_site()
    letters = lambda t: re.sub(r"[^a-z0-9]", "", t.lower())  # the rendering adds links, code, curly quotes, math
    missing = []
    for nb, name, doc, is_class in _documented_names():
        page = site/nb
        if not page.exists() or name.lower() not in anchors(page): missing.append(f"{nb}: {name} has no entry"); continue
        if doc and letters(doc)[:40] not in letters(page_text(page)): missing.append(f"{nb}: {name}'s docstring is not shown")
        if is_class and f"class {name}(" not in page_text(page): missing.append(f"{nb}: {name}'s signature does not say class")
    assert not missing, "\n".join(missing)
