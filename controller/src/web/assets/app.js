// NEX Backup dashboard: progressive additions only; every page works without this.
"use strict";
