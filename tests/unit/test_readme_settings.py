"""README.md's configuration table and config.SETTINGS name the same settings, with the same defaults."""

import re

from config import PROJECT_DIR, SETTINGS, Config, flag, path

NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")
CODE = re.compile(r"`([^`]+)`")


def readme_rows() -> list[list[str]]:
    """The cells of each row of the table under '## Configuration'."""
    readme = (PROJECT_DIR / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    header, separator, *rows = lines
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["variable", "default", "meaning"]
    assert set(separator) <= set("|-: ")
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def readme_names() -> list[str]:
    return [name for row in readme_rows() for name in NAME.findall(row[0])]


def test_the_readme_lists_every_setting():
    declared = {setting.name for setting in SETTINGS}
    assert sorted(declared - set(readme_names())) == []


def test_the_readme_lists_no_setting_that_does_not_exist():
    declared = {setting.name for setting in SETTINGS}
    assert sorted(set(readme_names()) - declared) == []


def test_the_readme_lists_each_setting_once():
    names = readme_names()
    assert sorted({name for name in names if names.count(name) > 1}) == []


def test_a_default_the_readme_spells_out_is_the_declared_default():
    # A row of several settings ("`A` / `B`", "`x` / `y`") pairs names and code spans in order.
    declared = {setting.name: setting for setting in SETTINGS}
    wrong = []
    for row in readme_rows():
        names, shown = NAME.findall(row[0]), CODE.findall(row[1])
        for index, name in enumerate(names):
            default = declared[name].default if name in declared else None
            if row[1] == "unset":
                if default not in (None, ""):
                    wrong.append((name, "unset", default))
            elif isinstance(default, str) and len(shown) == len(names) and shown[index] != default:
                wrong.append((name, shown[index], default))
    assert wrong == []


def test_settings_are_declared_once_and_explained_in_one_line():
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names))
    keys = [setting.config_key for setting in SETTINGS]
    assert len(keys) == len(set(keys))
    assert [setting.name for setting in SETTINGS if not setting.doc or "\n" in setting.doc] == []


def test_every_declared_setting_is_read_from_its_variable(tmp_path):
    # A value no default has, spelled so that its type takes it.
    special = {flag: lambda name: "yes", path: lambda name: str(tmp_path / name)}
    environ = {setting.name: special.get(setting.type, lambda name: "7")(setting.name) for setting in SETTINGS}
    config, defaults = Config(environ), Config({})
    unchanged = [setting.name for setting in SETTINGS
                 if getattr(config, setting.config_key) == getattr(defaults, setting.config_key)]
    assert unchanged == []
