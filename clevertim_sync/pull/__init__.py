"""One pull of an account: fetch -> diff -> apply.

`pipeline.py` runs it (the listings fetched one ahead, diffed a batch at a time, applied through the
mirror's store, the mass-delete guard at each listing's end); `diff.py` is the pure diff against the
mirror's index; `documents.py` and `photos.py` are its two hooks (an endpoint an account lacks, and
contact photos after the contacts).
"""
