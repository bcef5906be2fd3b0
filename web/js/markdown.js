// A small Markdown renderer that builds DOM nodes directly: text is only ever assigned
// with textContent, so a message containing HTML (`<script>`, `onerror=`) stays text.
// Supports paragraphs, headings, fenced code, inline code, bold, italics, links (http,
// https, mailto only), lists, blockquotes and tables.

const SAFE_LINK = /^(https?:|mailto:)/i;

function el(tag, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Inline spans: `code`, **bold**, *italic* / _italic_, [text](url).
function inline(parent, text) {
  const pattern = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*|_[^_\s][^_]*_)|(\[[^\]]+\]\([^)\s]+\))/;
  let rest = text;
  while (rest.length > 0) {
    const match = pattern.exec(rest);
    if (!match) {
      parent.append(document.createTextNode(rest));
      return;
    }
    if (match.index > 0) parent.append(document.createTextNode(rest.slice(0, match.index)));
    const token = match[0];
    if (match[1]) {
      parent.append(el("code", token.slice(1, -1)));
    } else if (match[2]) {
      const strong = el("strong");
      inline(strong, token.slice(2, -2));
      parent.append(strong);
    } else if (match[3]) {
      const em = el("em");
      inline(em, token.slice(1, -1));
      parent.append(em);
    } else {
      const close = token.indexOf("](");
      const label = token.slice(1, close);
      const url = token.slice(close + 2, -1);
      if (SAFE_LINK.test(url)) {
        const a = el("a", label);
        a.href = url;
        a.rel = "noopener noreferrer nofollow";
        a.target = "_blank";
        parent.append(a);
      } else {
        parent.append(document.createTextNode(token));
      }
    }
    rest = rest.slice(match.index + token.length);
  }
}

function isTableRow(line) {
  return /^\s*\|.*\|\s*$/.test(line);
}

function cells(line) {
  return line.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
}

/** Renders `source` as Markdown into a new element. */
export function renderMarkdown(source) {
  const root = el("div");
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) {
      const p = el("p");
      paragraph.forEach((line, n) => {
        if (n > 0) p.append(el("br"));
        inline(p, line);
      });
      root.append(p);
      paragraph = [];
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*```\s*([\w+-]*)\s*$/.exec(line);
    if (fence) {
      flush();
      const code = [];
      i += 1;
      while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) code.push(lines[i++]);
      i += 1;
      const pre = el("pre");
      const c = el("code", code.join("\n"));
      if (fence[1]) c.dataset.lang = fence[1];
      pre.append(c);
      root.append(pre);
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      const h = el(`h${Math.min(heading[1].length + 2, 6)}`);
      inline(h, heading[2]);
      root.append(h);
      i += 1;
      continue;
    }
    if (isTableRow(line) && i + 1 < lines.length && /^\s*\|?\s*:?-{2,}/.test(lines[i + 1])) {
      flush();
      const table = el("table");
      const head = el("tr");
      cells(line).forEach((c) => { const th = el("th"); inline(th, c); head.append(th); });
      table.append(head);
      i += 2;
      while (i < lines.length && isTableRow(lines[i])) {
        const tr = el("tr");
        cells(lines[i]).forEach((c) => { const td = el("td"); inline(td, c); tr.append(td); });
        table.append(tr);
        i += 1;
      }
      root.append(table);
      continue;
    }
    const item = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = el(ordered ? "ol" : "ul");
      while (i < lines.length) {
        const m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(lines[i]);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        const li = el("li");
        inline(li, m[2]);
        list.append(li);
        i += 1;
      }
      root.append(list);
      continue;
    }
    if (/^\s*>/.test(line)) {
      flush();
      const quote = el("blockquote");
      const inner = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) inner.push(lines[i++].replace(/^\s*>\s?/, ""));
      quote.append(renderMarkdown(inner.join("\n")));
      root.append(quote);
      continue;
    }
    if (line.trim() === "") {
      flush();
    } else {
      paragraph.push(line);
    }
    i += 1;
  }
  flush();
  return root;
}
