"""Helpers that test files of more than one folder use: `from support.daemon import Daemon`.

Importable because pytest puts tests/ on sys.path for its conftest.py; a test module never imports
another test module of another folder (that works only when pytest happened to import that
folder first)."""
