"""The application style sheet: a calm light theme with a dark navigation rail."""

STYLE_SHEET = """
QMainWindow { background: #fafafa; }
QListWidget#nav {
    background: #263238; color: #eceff1; border: none; font-size: 14px; padding-top: 12px;
}
QListWidget#nav::item { padding: 10px 16px; }
QListWidget#nav::item:selected { background: #37474f; color: #ffffff; border-left: 3px solid #4fc3f7; }
QLabel#emptyState { color: #607d8b; font-size: 13px; padding: 12px; }
QLabel#pageTitle { font-size: 18px; font-weight: 600; padding: 4px 0; }
QLabel#errorText { color: #c62828; }
QPushButton { padding: 5px 12px; }
QPushButton#primary { background: #0277bd; color: white; border-radius: 4px; padding: 6px 14px; }
QPushButton#primary:disabled { background: #90a4ae; }
QStatusBar { background: #eceff1; }
QTableView, QTableWidget { gridline-color: #e0e0e0; }
QHeaderView::section { background: #eceff1; padding: 4px; border: none; border-right: 1px solid #cfd8dc; }
"""
