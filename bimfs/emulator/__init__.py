"""bimfs.emulator"""
