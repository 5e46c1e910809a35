"""The docs name only what exists: gin files, modules, commands, files, links.

For README.md and every docs/*.md (the studies' generated results under
docs/studies/ excepted), every mention of

- a gin file (`models/switch_tiny.gin`, `gin/layouts/data_32.gin`,
  `guard.gin`) is a file under gin/ (T5's own gin files and the files a run
  writes excepted, by name);
- a module (`python -m mtf_switch.training.train`, `mtf_switch.t5.compat`)
  is a file of the source tree (mtf_switch.tasks and mtf_switch.gin_configs
  mapped to tasks/ and gin/ as setup.py maps them), and the first name after
  the module is defined in it; a name right after the package
  (`mtf_switch.SwitchFeedForward`) is one of its gin configurables or
  defined in mtf_switch/__init__.py; `python -m` of another package is a
  module `importlib.util.find_spec` finds;
- a name `mtf_switch_*` that is not a task or mixture of tasks/ is one of
  setup.py's console scripts;
- a path into the repository (`mtf_switch/t5/quiet.py`, `tests/hf/`) exists;
- a relative markdown link leads to a file that exists, and its `#anchor`,
  if any, to a heading of that file.

Nothing is imported: modules are found as files and read with `ast`, so
the checks run in a second without TensorFlow.
"""
import ast
import functools
import importlib.util
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "mtf_switch"

# gin files a mention may name that are not ours: T5's (found in T5's own
# gin folder) and those a run writes.
T5_GIN_FILES = ("dataset.gin", "eval.gin", "infer.gin", "perplexity_eval.gin")
WRITTEN_GIN_FILES = ("operative_config.gin", "model.gin")
# The subfolders of gin/ a mention of a gin file may start with.
GIN_FOLDERS = ("models", "layouts", "studies", "finetune", "distill")
# Top-level folders of the repository whose paths the docs may name.
REPO_FOLDERS = ("mtf_switch", "gin", "tasks", "tests", "benchmarks",
                "scripts", "docs")
# `mtf_switch_import_hook.pth`, the import hook's file (setup.py's HOOK_PTH).
OTHER_NAMES = ("mtf_switch_import_hook",)


def doc_files():
  """README.md and docs/*.md, as paths relative to the repository."""
  docs = sorted(name for name in os.listdir(os.path.join(REPO, "docs"))
                if name.endswith(".md"))
  return ["README.md"] + [os.path.join("docs", name) for name in docs]


def read(relative_path):
  with open(os.path.join(REPO, relative_path), encoding="utf-8") as f:
    return f.read()


# --- setup.py, read without running it ---------------------------------


@functools.lru_cache()
def setup_keywords():
  """setup()'s literal keyword arguments (package_dir, entry_points)."""
  tree = ast.parse(read("setup.py"))
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == "setup"):
      keywords = {}
      for keyword in node.keywords:
        try:
          keywords[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
          pass  # not a literal (packages, cmdclass)
      return keywords
  raise AssertionError("no setup() call in setup.py")


def console_scripts():
  return {entry.split("=")[0].strip()
          for entry in setup_keywords()["entry_points"]["console_scripts"]}


# --- (a) gin files -----------------------------------------------------

_GIN_PATH = re.compile(r"(?<![\w./-])((?:[\w.-]+/)+[\w.-]+\.gin)\b")
_GIN_NAME = re.compile(r"(?<![\w./-])([\w-]+\.gin)\b")


@functools.lru_cache()
def t5_gin_files():
  spec = importlib.util.find_spec("t5")  # top level: finds, imports nothing
  folder = os.path.join(spec.submodule_search_locations[0], "models", "gin")
  return set(os.listdir(folder))


@functools.lru_cache()
def our_gin_names():
  names = set()
  for _, _, files in os.walk(os.path.join(REPO, "gin")):
    names.update(name for name in files if name.endswith(".gin"))
  return names


def gin_problems(text):
  """Gin files the text names that are not there."""
  problems = []
  for path in _GIN_PATH.findall(text):
    parts = path.split("/")
    if parts[0] == "gin":
      parts = parts[1:]
    elif parts[0] not in GIN_FOLDERS:
      continue  # another folder: a run's output such as runs/x/model.gin
    if not os.path.isfile(os.path.join(REPO, "gin", *parts)):
      problems.append("gin file %s: no gin/%s" % (path, "/".join(parts)))
  for name in _GIN_NAME.findall(text):
    if name in T5_GIN_FILES:
      if name not in t5_gin_files():
        problems.append("gin file %s: not in T5's gin folder" % name)
    elif name not in WRITTEN_GIN_FILES and name not in our_gin_names():
      problems.append("gin file %s: no such file under gin/" % name)
  return problems


# --- (b) modules -------------------------------------------------------

_PYTHON_M = re.compile(r"python3? -m (\w[\w.]*)")
_DOTTED = re.compile(r"(?<![\w./-])(%s(?:\.\w+)+)" % PACKAGE)


def module_file(module):
  """The source file of a module of this repository (package: __init__.py,
  or the folder of a package without one), or None."""
  package_dir = setup_keywords()["package_dir"]
  parts = module.split(".")
  for i in range(len(parts), 0, -1):
    prefix = ".".join(parts[:i])
    if prefix in package_dir:
      base = os.path.join(REPO, package_dir[prefix], *parts[i:])
      break
  else:
    return None
  for candidate in (base + ".py", os.path.join(base, "__init__.py")):
    if os.path.isfile(candidate):
      return candidate
  if module in package_dir and os.path.isdir(base):
    return base  # a data package (mtf_switch.gin_configs)
  return None


@functools.lru_cache()
def defined_names(path):
  """Top-level names of a source file: defs, classes, assignments, imports,
  and the names its gin configurables are registered under."""
  names = set()
  for node in ast.parse(open(path, encoding="utf-8").read()).body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      names.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      names.update(t.id for t in targets if isinstance(t, ast.Name))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((alias.asname or alias.name).split(".")[0]
                   for alias in node.names)
  return names


@functools.lru_cache()
def gin_configurables():
  """Names registered with `@gin.configurable(..., module="mtf_switch")`
  anywhere in the package (explicit name or the decorated def's)."""
  names = set()
  for folder, _, files in os.walk(os.path.join(REPO, PACKAGE)):
    for name in files:
      if not name.endswith(".py"):
        continue
      with open(os.path.join(folder, name), encoding="utf-8") as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
          continue
        for decorator in node.decorator_list:
          if not (isinstance(decorator, ast.Call)
                  and ast.unparse(decorator.func) == "gin.configurable"):
            continue
          module = [k.value.value for k in decorator.keywords
                    if k.arg == "module"]
          if module == [PACKAGE]:
            explicit = [a.value for a in decorator.args
                        if isinstance(a, ast.Constant)]
            names.add(explicit[0] if explicit else node.name)
  return names


def dotted_problem(dotted):
  """Why `mtf_switch.a.b.c` names nothing (module, then one attribute), or
  None."""
  parts = dotted.split(".")
  # The longest prefix that is a module; the name after it must be defined.
  for i in range(len(parts), 0, -1):
    path = module_file(".".join(parts[:i]))
    if path is not None:
      break
  if i == len(parts):
    return None
  attribute = parts[i]
  if i == 1 and attribute in gin_configurables():
    return None
  if os.path.isfile(path) and attribute in defined_names(path):
    return None
  return "%s: no module %s, nor %s in %s" % (
      dotted, ".".join(parts[:i + 1]), attribute,
      os.path.relpath(path, REPO))


def module_problems(text):
  """`python -m` modules and mtf_switch.* names the text names that are
  not there."""
  problems = []
  for module in _PYTHON_M.findall(text):
    if module.split(".")[0] == PACKAGE:
      if module_file(module) is None:
        problems.append("python -m %s: no such module" % module)
    elif "." in module:
      problems.append("python -m %s: only top-level modules of other "
                      "packages are checked; name one" % module)
    elif importlib.util.find_spec(module) is None:
      problems.append("python -m %s: no such module" % module)
  for dotted in _DOTTED.findall(text):
    problem = dotted_problem(dotted.rstrip("."))
    if problem:
      problems.append(problem)
  return problems


# --- (c) console scripts -----------------------------------------------

_SCRIPT = re.compile(r"(?<![\w./-])(%s_\w+)" % PACKAGE)
_TASK_NAME = re.compile(r"""["'](%s_[\w.]*)""" % PACKAGE)


@functools.lru_cache()
def task_name_prefixes():
  """The literal starts of task and mixture names in tasks/*.py (a name
  built as "mtf_switch_glue_%s" gives the prefix mtf_switch_glue_)."""
  prefixes = set()
  for name in os.listdir(os.path.join(REPO, "tasks")):
    if name.endswith(".py"):
      prefixes.update(_TASK_NAME.findall(read(os.path.join("tasks", name))))
  return prefixes


def script_problems(text):
  """mtf_switch_* names that are neither tasks nor console scripts."""
  scripts = console_scripts()
  problems = []
  for name in _SCRIPT.findall(text):
    if name in scripts or name in OTHER_NAMES:
      continue
    if any(name.startswith(prefix) for prefix in task_name_prefixes()):
      continue
    problems.append("%s: not a console script of setup.py (%s) nor a task"
                    % (name, ", ".join(sorted(scripts))))
  return problems


# --- (d) repository paths and (e) links ----------------------------------

_REPO_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*)" %
                        "|".join(REPO_FOLDERS))
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#+\s+(.*?)\s*#*$", re.M)


def path_problems(text):
  """Repository paths (`mtf_switch/t5/quiet.py`, `tests/hf/`) that do not
  exist."""
  problems = []
  for match in _REPO_PATH.finditer(text):
    if text[match.end():match.end() + 1] in ("<", "*", "{"):
      continue  # a pattern: docs/studies/<name>/, models/lm_*.gin
    path = match.group(1).rstrip(".")
    if not os.path.exists(os.path.join(REPO, path)):
      problems.append("%s: no such file or folder" % path)
  return problems


def anchors(markdown):
  """GitHub's anchors of a markdown text's headings."""
  seen = {}
  result = set()
  for heading in _HEADING.findall(_FENCE.sub("", markdown)):
    slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower())
    slug = slug.replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    result.add(slug if count == 0 else "%s-%d" % (slug, count))
  return result


def link_problems(text, relative_path):
  """Relative links of a markdown file (at relative_path in the repository)
  to files that do not exist, or to headings they do not have."""
  folder = os.path.dirname(os.path.join(REPO, relative_path))
  prose = _CODE_SPAN.sub("", _FENCE.sub("", text))
  problems = []
  for target in _LINK.findall(prose):
    if re.match(r"[a-z]+:", target):
      continue  # https:, mailto:
    path, _, anchor = target.partition("#")
    full = os.path.normpath(os.path.join(folder, path)) if path else (
        os.path.join(REPO, relative_path))
    if not os.path.exists(full):
      problems.append("link %s: no %s" % (target, os.path.relpath(full, REPO)))
    elif anchor and full.endswith(".md"):
      with open(full, encoding="utf-8") as f:
        if anchor not in anchors(f.read()):
          problems.append("link %s: no heading #%s in %s"
                          % (target, anchor, os.path.relpath(full, REPO)))
  return problems


# --- the docs ----------------------------------------------------------


@pytest.mark.parametrize("doc", doc_files())
def test_gin_files_exist(doc):
  assert gin_problems(read(doc)) == []


@pytest.mark.parametrize("doc", doc_files())
def test_modules_exist(doc):
  assert module_problems(read(doc)) == []


@pytest.mark.parametrize("doc", doc_files())
def test_console_scripts_are_setups(doc):
  assert script_problems(read(doc)) == []


@pytest.mark.parametrize("doc", doc_files())
def test_repository_paths_exist(doc):
  assert path_problems(read(doc)) == []


@pytest.mark.parametrize("doc", doc_files())
def test_relative_links_lead_to_files_and_headings(doc):
  assert link_problems(read(doc), doc) == []


def test_every_docs_page_is_checked_and_linked_from_the_readme():
  readme = read("README.md")
  for doc in doc_files()[1:]:
    assert "(%s)" % doc in readme, doc


# --- each check fails on what it should catch --------------------------


def test_a_missing_gin_file_is_named():
  assert gin_problems(
      "--gin_file=models/switch_tiny.gin --gin_file layouts/data_32.gin "
      "gin/models/released/switch_base.gin guard.gin dataset.gin "
      "runs/x/model.gin operative_config.gin") == []
  assert gin_problems("--gin_file=models/switch_tyni.gin") == [
      "gin file models/switch_tyni.gin: no gin/models/switch_tyni.gin"]
  assert gin_problems("`gin/layouts/data_31.gin`") == [
      "gin file gin/layouts/data_31.gin: no gin/layouts/data_31.gin"]
  assert gin_problems("give `gaurd.gin` first") == [
      "gin file gaurd.gin: no such file under gin/"]


def test_a_missing_module_is_named():
  assert module_problems(
      "python -m mtf_switch.training.train; python -m pytest; "
      "mtf_switch.t5.mtf_model.MtfModel, mtf_switch.tasks, "
      "@mtf_switch.TokensChooseRouter(), "
      "mtf_switch.activation_dtype.dtype = 'bfloat16', "
      "mtf_switch.gin_configs") == []
  assert module_problems("python -m mtf_switch.train") == [
      "python -m mtf_switch.train: no such module",
      "mtf_switch.train: no module mtf_switch.train, nor train in "
      "mtf_switch/__init__.py"]
  assert module_problems("`mtf_switch.training.mesh.ReproducibleMesh`") == [
      "mtf_switch.training.mesh.ReproducibleMesh: no module "
      "mtf_switch.training.mesh.ReproducibleMesh, nor ReproducibleMesh in "
      "mtf_switch/training/mesh.py"]
  assert module_problems("python -m no_such_module_anywhere") == [
      "python -m no_such_module_anywhere: no such module"]


def test_a_console_script_not_in_setup_is_named():
  assert script_problems(
      "mtf_switch_train, mtf_switch_mesh_transformer, "
      "mtf_switch_default_span_corruption, mtf_switch_glue_cola, "
      "mtf_switch_import_hook.pth") == []
  problems = script_problems("run `mtf_switch_trian --steps 3`")
  assert len(problems) == 1
  assert problems[0].startswith(
      "mtf_switch_trian: not a console script of setup.py (")


def test_a_missing_repository_path_is_named():
  assert path_problems("`mtf_switch/t5/quiet.py`, tests/hf/, gin/, "
                       "docs/studies/<name>/, gin/models/lm_*.gin") == []
  assert path_problems("see `mtf_switch/quiet.py`.") == [
      "mtf_switch/quiet.py: no such file or folder"]


def test_a_broken_link_is_named():
  assert link_problems("[write-up](reproduction.md), "
                       "[pilot](studies/pilot/summary.md), "
                       "[web](https://example.com/x.md), "
                       "`[not a link](nowhere.md)`",
                       "docs/page.md") == []
  assert link_problems("[write-up](reproduction.md)", "README.md") == [
      "link reproduction.md: no reproduction.md"]
  assert link_problems("[x](../README.md#no-such-heading)",
                       "docs/page.md") == [
      "link ../README.md#no-such-heading: no heading #no-such-heading in "
      "README.md"]


def test_anchors_follow_github():
  assert anchors("# The main job\n## `MtfModel` from Python\n"
                 "## Sizes, and more\n## Sizes, and more\n") == {
      "the-main-job", "mtfmodel-from-python", "sizes-and-more",
      "sizes-and-more-1"}
