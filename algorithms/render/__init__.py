"""Super-resolution images, FRC resolution and QC reports from localization tables (nm, design §6)."""
