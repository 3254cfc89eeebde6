"""Reporting on the mirror: `reports.py` the report views' queries, search and record versions;
`datasette_meta.py` the Datasette metadata built from the registry and the schema.
"""
