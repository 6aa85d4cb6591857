"""Label Studio interop: push items to a Label Studio project, pull its annotations back as
Redline reviews (by hand, by webhook), and import Label Studio export files.

Rooms as in the apps: ``mapping`` (pure: labeling config, task data, result → decision),
``services`` (every write and every call to Label Studio), ``selectors`` (reads), ``api``
(REST), ``views`` + ``forms`` (the manager page), ``tasks`` (Celery). See
``docs/label-studio.md``.
"""
