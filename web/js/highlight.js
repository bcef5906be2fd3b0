// A small syntax highlighter for code blocks: comments, strings, numbers and the keywords of
// the languages people paste most. It builds text nodes and <span>s only (never HTML from
// the text), and a language it does not know still gets its strings, numbers and comments.

const KEYWORDS = {
  js: "async await break case catch class const continue default delete do else export extends false finally for from function if import in instanceof let new null of return static super switch this throw true try typeof undefined var void while yield",
  ts: "abstract as interface type enum implements private protected public readonly declare namespace keyof",
  py: "and as assert async await break class continue def del elif else except False finally for from global if import in is lambda None nonlocal not or pass raise return True try while with yield self",
  rs: "as async await break const continue crate dyn else enum extern false fn for if impl in let loop match mod move mut pub ref return self Self static struct super trait true type unsafe use where while Some None Ok Err",
  go: "break case chan const continue default defer else fallthrough for func go goto if import interface map package range return select struct switch type var nil true false",
  sh: "if then else elif fi case esac for while until do done in function return export local echo exit set unset readonly",
  sql: "select from where and or not insert into values update set delete create table index on join left right inner outer group by order having limit offset as distinct null is in like between union all primary key references default",
  c: "auto break case char const continue default do double else enum extern float for goto if int long register return short signed sizeof static struct switch typedef union unsigned void volatile while class public private protected new delete this true false null nullptr template typename namespace using virtual override bool",
  json: "true false null",
};
const ALIASES = {
  javascript: "js", jsx: "js", mjs: "js", typescript: "ts", tsx: "ts", python: "py",
  rust: "rs", golang: "go", bash: "sh", shell: "sh", zsh: "sh", console: "sh",
  cpp: "c", "c++": "c", h: "c", hpp: "c", java: "c", cs: "c", csharp: "c", kotlin: "c",
  swift: "c", postgres: "sql", postgresql: "sql", sqlite: "sql",
};
// Comment starts by language (besides the C family's `//` and `/* */`).
const HASH_COMMENTS = new Set(["py", "sh", "toml", "yaml", "yml", "rb", "ruby", "r", "dockerfile", "make", "makefile"]);
const DASH_COMMENTS = new Set(["sql", "lua", "haskell", "hs"]);

function language(name) {
  const lower = (name || "").toLowerCase();
  return ALIASES[lower] || lower;
}

function keywords(lang) {
  const words = KEYWORDS[lang] || "";
  const extra = lang === "ts" ? KEYWORDS.js : "";
  const set = new Set(`${words} ${extra}`.split(/\s+/).filter(Boolean));
  return lang === "sql" ? new Set([...set].map((w) => w.toLowerCase())) : set;
}

/** The tokens of `code` in `lang`: [kind, text] pairs, kind null for plain text. */
export function tokens(code, lang) {
  lang = language(lang);
  const words = keywords(lang);
  const hash = HASH_COMMENTS.has(lang);
  const dash = DASH_COMMENTS.has(lang);
  const slash = !hash && !dash && lang !== "json";
  const out = [];
  let plain = "";
  const push = (kind, text) => {
    if (plain) out.push([null, plain]);
    plain = "";
    out.push([kind, text]);
  };
  let i = 0;
  while (i < code.length) {
    const rest = code.slice(i);
    let match = null;
    if ((slash && rest.startsWith("//")) || (hash && rest[0] === "#") || (dash && rest.startsWith("--"))) {
      const end = code.indexOf("\n", i);
      match = ["com", end === -1 ? rest : code.slice(i, end)];
    } else if (slash && rest.startsWith("/*")) {
      const end = code.indexOf("*/", i + 2);
      match = ["com", end === -1 ? rest : code.slice(i, end + 2)];
    } else if (rest[0] === '"' || rest[0] === "'" || rest[0] === "`") {
      const quote = rest[0];
      let j = 1;
      while (j < rest.length && rest[j] !== quote && !(rest[j] === "\n" && quote !== "`")) {
        j += rest[j] === "\\" ? 2 : 1;
      }
      match = ["str", rest.slice(0, Math.min(j + 1, rest.length))];
    } else {
      const number = /^(0x[0-9a-fA-F_]+|\d[\d_]*(\.\d+)?([eE][+-]?\d+)?)/.exec(rest);
      const word = /^[A-Za-z_][\w]*/.exec(rest);
      const before = i > 0 ? code[i - 1] : " ";
      if (number && !/[\w.]/.test(before)) {
        match = ["num", number[0]];
      } else if (word) {
        const text = word[0];
        const known = words.has(lang === "sql" ? text.toLowerCase() : text);
        if (known) match = ["kw", text];
        else {
          plain += text;
          i += text.length;
          continue;
        }
      }
    }
    if (match) {
      push(match[0], match[1]);
      i += match[1].length;
    } else {
      plain += code[i];
      i += 1;
    }
  }
  if (plain) out.push([null, plain]);
  return out;
}

/** Highlights a `<code>` element in place (its text stays exactly the same). */
export function highlight(code) {
  const text = code.textContent;
  if (text.length > 100000) return;
  const nodes = tokens(text, code.dataset.lang).map(([kind, part]) => {
    if (!kind) return document.createTextNode(part);
    const span = document.createElement("span");
    span.className = `hl-${kind}`;
    span.textContent = part;
    return span;
  });
  code.replaceChildren(...nodes);
}
