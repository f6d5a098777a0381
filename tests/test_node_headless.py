"""The node must run without the dashboard: importing it never pulls in textual."""

import subprocess
import sys


def test_node_package_does_not_import_textual():
    code = (
        "import sys, pkgutil, importlib, node\n"
        "for m in pkgutil.walk_packages(node.__path__, 'node.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'textual' not in sys.modules, 'node imported textual'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
