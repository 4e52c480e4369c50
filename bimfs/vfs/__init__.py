"""bimfs.vfs"""
