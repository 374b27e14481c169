"""Build hook for the optional mypyc-compiled core (``make fast``).

Plain installs (``pip install -e .``) build nothing here: jex is pure
Python. With ``JEX_COMPILE=1`` the modules listed in ``jex/native.py``
are compiled with mypyc (``pip install -e '.[fast]'`` brings it):

    JEX_COMPILE=1 python setup.py build_ext --inplace
"""

import os
import runpy

from setuptools import setup

ext_modules = []
if os.environ.get("JEX_COMPILE") == "1":
    from mypyc.build import mypycify

    native = runpy.run_path(os.path.join("jex", "native.py"))
    ext_modules = mypycify(
        [os.path.join("jex", "core", f"{name}.py") for name in native["COMPILED"]],
        group_name=native["GROUP"],
        opt_level="3",
    )

setup(ext_modules=ext_modules)
