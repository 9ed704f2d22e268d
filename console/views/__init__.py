"""The site's own pages: dashboard and help (site), the profile. Support tickets and
announcements are apps of their own: console/support, console/announcements."""
