"""A stand-in for a YOLOv5 fork's code, as files on disk: ultralytics/yolov5 v7.0's
``models/common.py`` and ``models/yolo.py`` (trimmed) with the attention classes the forks
add, each written the way its source writes it (the v7.0 tutorials in ``models.common``,
YOLOAir in ``models.Models``, External-Attention's and the official CBAM beside them), and
plugin blocks loaded from ``models/extra/*.py`` by file. Our own code never imports it: the
tests save checkpoints with it, and ``attn-deploy verify --fork`` runs it, as a user's fork
would be run. One tree stands in for several forks: a yaml's ``fork`` key says whose classes
its row names mean where two forks use one name (``CBAM``).
"""
