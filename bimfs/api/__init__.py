"""bimfs.api"""
