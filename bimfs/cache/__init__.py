"""bimfs.cache"""
