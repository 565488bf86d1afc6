"""The HTML report's style sheet: system fonts only (nothing is fetched), print-friendly light colours."""

CSS = """
:root{--fg:#1d2430;--muted:#5f6b7a;--line:#dde3ea;--bg:#f6f8fa;--accent:#1f6fb2}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:24px 28px 40px}
header h1{margin:0 0 4px;font-size:24px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px 20px;margin:16px 0}
h2{font-size:18px;margin:0 0 12px}h3{font-size:15px;margin:18px 0 6px}
.muted{color:var(--muted)}.small{font-size:12px;font-weight:normal}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef1f5;padding:1px 4px;
border-radius:3px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(128px,1fr));gap:10px}
.card{border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.card .v{font-size:24px;font-weight:600}.card .k{font-weight:600}
.card.alert{border-color:#e0a000;background:#fffaf0}
table{border-collapse:collapse;width:100%;margin:6px 0;font-size:13px}
table.narrow{width:auto}
th{text-align:left;font-weight:600;border-bottom:2px solid var(--line);padding:5px 8px;white-space:nowrap}
td{border-bottom:1px solid var(--line);padding:5px 8px;vertical-align:top;overflow-wrap:anywhere}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;color:#fff;white-space:nowrap}
.badge.ok,.sev-none{background:#2e8b57}.sev-info{background:#1f6fb2}.sev-warning{background:#e08e00}
.sev-error{background:#c62828}.sev-unreadable{background:#6d4c41}.badge.dup{background:#6a5acd}
.legend span{margin-right:14px;white-space:nowrap}.legend{font-size:12px;color:var(--muted)}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
.verdict{padding:10px 14px;border-radius:6px;font-weight:600;margin-bottom:8px}
.verdict.pass{background:#e8f5ee;color:#1e6b41}.verdict.fail{background:#fdecea;color:#9b1c1c}
.chartbox{overflow-x:auto}
svg.chart{display:block;max-width:100%;height:auto;font-family:inherit}svg.stretch{width:100%}
svg .ct{font-size:12px;font-weight:600;fill:var(--fg)}svg .tk{font-size:10px;fill:var(--muted)}
svg .lb{font-size:11px;fill:var(--fg)}svg .grid{stroke:#edf0f3}svg .ax{stroke:#9aa5b1}
svg .band{fill:#1f6fb2;fill-opacity:.16;stroke:none}svg .med{fill:none;stroke:#1f6fb2;stroke-width:1.8}
svg .medpt{fill:#1f6fb2}svg .whisk{stroke:#8fb3d6;stroke-width:1.4}
svg .pt circle{fill:#1f6fb2}svg .pt.ood circle{fill:#e07b00}svg .pt.ood .whisk{stroke:#f0b36b}
svg .thr{stroke:#c62828;stroke-dasharray:5 4}svg .thrt{font-size:11px;fill:#c62828}
svg .bar{fill:#1f6fb2;fill-opacity:.8}
details.adapter{border:1px solid var(--line);border-radius:6px;margin:6px 0;background:#fff}
details.adapter>summary{cursor:pointer;padding:8px 12px;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
details.adapter>summary .name{font-weight:600;overflow-wrap:anywhere}
details.adapter[open]>summary{border-bottom:1px solid var(--line);background:#fafbfc}
details.adapter .body{padding:10px 16px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:4px 0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;overflow-wrap:anywhere}
.prob{white-space:nowrap}.pbar{display:inline-block;height:8px;background:#1f6fb2;border-radius:2px;vertical-align:middle;margin-right:6px}
.errbox{border-left:4px solid #c62828;background:#fdecea;padding:8px 12px;border-radius:4px}
.note{border-left:4px solid #e08e00;background:#fff7e6;padding:8px 12px;border-radius:4px;margin:6px 0}
footer{margin-top:20px;font-size:12px}
"""
