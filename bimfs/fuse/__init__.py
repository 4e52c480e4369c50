"""bimfs.fuse"""
