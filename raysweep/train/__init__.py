"""raysweep.train"""
