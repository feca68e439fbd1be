#!/usr/bin/env python3
"""Lints charts/llmesh with Helm's own linter (the helm-sdkpy package, which
bundles the Helm library): once with the default values, and once with
every optional part switched on (tests/injector/all-options.values.yaml
merged over the defaults), so the templates behind `if`s are rendered too.
Lint renders every template and checks values.schema.json. Exits non-zero
on any error (or, with --strict, warning). `make deps` installs helm-sdkpy.
"""
import asyncio
import pathlib
import shutil
import sys
import tempfile

SEVERITY = {1: "INFO", 2: "WARNING", 3: "ERROR"}


def merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


def lint(helm, chart):
    result = asyncio.run(helm.Lint(helm.Configuration()).run(str(chart)))
    worst = 0
    for m in result.get("Messages") or []:
        sev = m.get("Severity", 0)
        worst = max(worst, sev)
        if sev >= 2:
            # helm-sdkpy does not carry the error text across; the path says where.
            print(f"  {SEVERITY.get(sev, sev)}: {m.get('Path')} {m.get('Err') or ''}")
    return worst


def main():
    strict = "--strict" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    chart = pathlib.Path(args[0] if args else "charts/llmesh").resolve()
    try:
        import helm_sdkpy as helm
        import yaml
    except ImportError as e:
        sys.exit(f"helm lint needs the Python packages helm-sdkpy and PyYAML ({e}); run `make deps`")
    limit = 2 if strict else 3
    failed = False
    print(f"helm lint {chart} (Helm library {helm.get_version()})")
    worst = lint(helm, chart)
    print(f"  default values: {SEVERITY.get(worst, 'OK')}")
    failed |= worst >= limit

    options = pathlib.Path(__file__).with_name("all-options.values.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp) / chart.name
        shutil.copytree(chart, copy)
        values = yaml.safe_load((chart / "values.yaml").read_text())
        merge(values, yaml.safe_load(options.read_text()))
        (copy / "values.yaml").write_text(yaml.safe_dump(values))
        worst = lint(helm, copy)
        print(f"  every option on ({options.name}): {SEVERITY.get(worst, 'OK')}")
        failed |= worst >= limit
    if failed:
        sys.exit("helm lint failed")


if __name__ == "__main__":
    main()
