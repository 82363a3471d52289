"""The frontier report's HTML template and stylesheet, shipped inside the wheel as raysweep.dashboards."""
