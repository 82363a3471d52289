"""raysweep.control"""
