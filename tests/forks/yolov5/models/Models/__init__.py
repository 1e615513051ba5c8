"""YOLOAir's layout: ``models.Models.research`` and ``models.Models.Attention.*``."""
