# Puts this directory on sys.path (pytest's default import mode), so `import gatehouse` finds the
# package without installing it.
