"""Offline backups of the mirror: `archive.py` writes, verifies, restores and prunes archives;
`database.py` is the database side (SQLite online backup, pg_dump, logical dump); `asof.py` the
point-in-time export rebuilt from history and `restore --from-export`.
"""
