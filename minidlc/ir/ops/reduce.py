"""(placeholder: filled in below)"""
