"""Build hook for the optional mypyc-compiled modules (``make fast``).

Plain installs (``pip install -e .``) build nothing here: jex is pure
Python. With ``JEX_COMPILE=1`` the groups listed in ``jex/native.py`` (the
core's engine modules, the journal's record framing) are compiled with
mypyc, one shared library per group (``pip install -e '.[fast]'`` brings it):

    JEX_COMPILE=1 python setup.py build_ext --inplace
"""

import os
import runpy

from setuptools import setup

ext_modules = []
if os.environ.get("JEX_COMPILE") == "1":
    from mypyc.build import mypycify

    native = runpy.run_path(os.path.join("jex", "native.py"))
    groups = [
        ([os.path.join(*group.package.split("."), f"{name}.py") for name in group.modules], group.library)
        for group in native["GROUPS"]
    ]
    ext_modules = mypycify([path for paths, _ in groups for path in paths], separate=groups, opt_level="3")

setup(ext_modules=ext_modules)
