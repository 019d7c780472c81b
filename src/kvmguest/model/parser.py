"""Parser for the VCS configuration language (main.cf, types.cf), built on lark.

``parse_text`` turns one file's text into blocks and links; ``load`` follows
``include`` statements (relative to the including file) and returns one
:class:`Config`. Syntax errors and structural errors (duplicates, a resource outside a
group) are collected as diagnostics with ``file:line:col``; semantic checks (types,
attributes, values) are :mod:`kvmguest.model.validate`'s job.
"""

from __future__ import annotations

import hashlib
import io
import os
from functools import cache
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput
from lark.exceptions import UnexpectedToken

from kvmguest.model import controls
from kvmguest.model.attributes import AttrDef, AttrType, Dimension, Value, ValueError_, coerce
from kvmguest.model.cache import cache_dir, read_cache, write_cache
from kvmguest.model.config import (
    Block,
    Config,
    ConfigInvalid,
    Diagnostic,
    GroupLink,
    Link,
    Pos,
    TypeDef,
)
from kvmguest.model.excerpt import excerpt
from kvmguest.model.files import UnreadableFile, main_cf, read_config_file

_TERMINAL_NAMES = {
    "WORD": "a name or value",
    "STRING": "a quoted string",
    "LPAR": "'('",
    "RPAR": "')'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "EQUAL": "'='",
    "COMMA": "','",
    "AT": "'@'",
    "LSQB": "'['",
    "RSQB": "']'",
    "REQUIRES": "'requires'",
    "GROUP": "'group'",
    "STATIC": "'static'",
    "TEMP": "'temp'",
    "T_STR": "'str'",
    "T_INT": "'int'",
    "T_BOOLEAN": "'boolean'",
    "T_KEYLIST": "'keylist'",
    "INCLUDE": "'include'",
    "CLUSTER": "'cluster'",
    "SYSTEM": "'system'",
    "TYPE": "'type'",
    "$END": "end of file",
}
MAX_INCLUDE_DEPTH = 16
_TYPE_BODY_ONLY = {"T_STR", "T_INT", "T_BOOLEAN", "T_KEYLIST", "STATIC", "TEMP"}


@cache
def _lark() -> Lark:
    grammar = resources.files("kvmguest.model").joinpath("config.lark").read_text()
    cached = _load_cached_parser(grammar)
    if cached is not None:
        return cached
    parser = Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)
    _save_cached_parser(grammar, parser)
    return parser


# Building the LALR tables costs ~30-40 ms, a quarter of a one-shot `kvmguest monitor`. The
# built parser is cached per user. Lark's own cache=True is not used: it loads a pickle from
# a predictable name in /tmp, which another user could plant. Ours lives in a directory
# owned by us and closed to others, and is only read when it and the file pass that check.


def _cache_path(grammar: str) -> Path:
    key = hashlib.sha256(f"{lark.__version__}\0{grammar}".encode()).hexdigest()[:24]
    return Path(cache_dir()) / f"parser-{key}.lark"


def _load_cached_parser(grammar: str) -> Lark | None:
    raw = read_cache(str(_cache_path(grammar)))
    if raw is None:
        return None
    try:
        return Lark.load(io.BytesIO(raw))
    except Exception:  # damaged, or from another lark: rebuild
        return None


def _save_cached_parser(grammar: str, parser: Lark) -> None:
    buf = io.BytesIO()
    parser.save(buf)
    write_cache(str(_cache_path(grammar)), buf.getvalue())


def unquote(text: str) -> str:
    r"""A STRING token's value: the quotes removed, ``\"`` and ``\\`` unescaped."""
    body = text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and body[i + 1] in ('"', "\\"):
            out.append(body[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _syntax_message(err: UnexpectedInput) -> str:
    if isinstance(err, UnexpectedCharacters):
        return f"unexpected character {excerpt(err.char)}"
    if isinstance(err, UnexpectedEOF):
        return "unexpected end of file (a block is not closed?)"
    if isinstance(err, UnexpectedToken):
        tok = err.token
        got = "end of file" if tok.type == "$END" else excerpt(str(tok))
        # LALR merges states of type bodies and attribute blocks; keep the hint to
        # what is useful in either.
        expected = sorted(
            _TERMINAL_NAMES.get(t, t.lower())
            for t in err.expected
            if not t.startswith("__") and t not in _TYPE_BODY_ONLY
        )
        hint = f"; expected {', '.join(expected)}" if expected else ""
        return f"unexpected {got}{hint}"
    return "syntax error"


class _Builder:
    """Walks one file's parse tree into the Config, collecting diagnostics."""

    def __init__(self, config: Config, file: str, diags: list[Diagnostic]) -> None:
        self.config = config
        self.file = file
        self.diags = diags
        self.current_group: str | None = None
        self.includes: list[tuple[str, Pos]] = []

    def pos(self, item: Token | Tree[Token]) -> Pos:
        if isinstance(item, Token):
            return Pos(self.file, item.line or 0, item.column or 0)
        return Pos(self.file, item.meta.line, item.meta.column)

    def error(self, pos: Pos, message: str) -> None:
        self.diags.append(Diagnostic(pos, message))

    def scalar(self, tree: Tree[Token]) -> str:
        tok = tree.children[0]
        assert isinstance(tok, Token)
        return unquote(str(tok)) if tok.type == "STRING" else str(tok)

    def value(self, tree: Tree[Token]) -> Value:
        if tree.data == "scalar":
            return self.scalar(tree)
        elements = [c for c in tree.children if isinstance(c, Tree)]
        pairs = [c for c in elements if c.data == "pair"]
        if pairs and len(pairs) != len(elements):
            self.error(self.pos(tree), "a list mixes plain values and 'key = value' pairs")
        if pairs:
            assoc: dict[str, str] = {}
            for pair in pairs:
                key_tree, val_tree = (c for c in pair.children if isinstance(c, Tree))
                key = self.scalar(key_tree)
                if key in assoc:
                    self.error(self.pos(pair), f"key {excerpt(key)} appears twice")
                assoc[key] = self.scalar(val_tree)
            return assoc
        return [self.scalar(c) for c in elements]

    def block(self, kind: str, name_tok: Token, tree: Tree[Token]) -> Block:
        block = Block(kind=kind, name=str(name_tok), pos=self.pos(name_tok))
        for assign in tree.children:
            if not isinstance(assign, Tree) or assign.data != "assign":
                continue
            name = assign.children[0]
            assert isinstance(name, Token)
            local = next((c for c in assign.children if _is(c, "local")), None)
            value_tree = assign.children[-1]
            assert isinstance(value_tree, Tree)
            value = self.value(value_tree)
            pos = self.pos(name)
            if isinstance(local, Tree):
                system = str(local.children[0])
                per_sys = block.local.setdefault(str(name), {})
                if system in per_sys:
                    self.error(pos, f"{name}@{system} is set twice in {kind} {block.name}")
                per_sys[system] = value
                block.attr_pos.setdefault(str(name), pos)
            else:
                if str(name) in block.attrs:
                    self.error(pos, f"{name} is set twice in {kind} {block.name}")
                block.attrs[str(name)] = value
                block.attr_pos[str(name)] = pos
        return block

    def type_def(self, tree: Tree[Token]) -> TypeDef:
        name_tok = tree.children[0]
        assert isinstance(name_tok, Token)
        tdef = TypeDef(str(name_tok), pos=self.pos(name_tok))
        for decl in tree.children[1:]:
            if not isinstance(decl, Tree):
                continue
            mods = {
                str(m.children[0])
                for m in decl.children
                if isinstance(m, Tree) and m.data == "modifier"
            }
            typename = next(m for m in decl.children if _is(m, "typename"))
            attr_tok = next(c for c in decl.children if isinstance(c, Token) and c.type == "WORD")
            dim_tree = next(
                (c for c in decl.children if _is(c, "vector") or _is(c, "association")), None
            )
            default_tree = next((c for c in decl.children if _is(c, "default")), None)
            assert isinstance(typename, Tree)
            tname = str(typename.children[0])
            if tname == "keylist":
                atype, dim = AttrType.STR, Dimension.KEYLIST
            else:
                atype = AttrType(tname)
                dim = Dimension.SCALAR
                if dim_tree is not None:
                    vector = dim_tree.data == "vector"  # type: ignore[union-attr]
                    dim = Dimension.VECTOR if vector else Dimension.ASSOCIATION
            default: Value | None = None
            default_pos = self.pos(decl)
            if default_tree is not None:
                inner = default_tree.children[0]  # type: ignore[union-attr]
                assert isinstance(inner, Tree)
                default = self.value(inner)
                default_pos = self.pos(inner)
            keys: tuple[str, ...] = ()
            if dim is Dimension.ASSOCIATION and isinstance(default, dict) and default:
                # An association declared with keys accepts only those keys.
                keys = tuple(default)
            if str(attr_tok) in tdef.attrs:
                self.error(self.pos(attr_tok), f"type {tdef.name}: {attr_tok} declared twice")
            tdef.attr_pos[str(attr_tok)] = self.pos(attr_tok)
            tdef.attrs[str(attr_tok)] = AttrDef(
                name=str(attr_tok),
                type=atype,
                dimension=dim,
                default=default,
                static="static" in mods,
                temp="temp" in mods,
                keys=keys,
            )
            try:  # a default is a value like any other: `int Level = "١٢"` is no integer
                coerce(tdef.attrs[str(attr_tok)], tdef.attrs[str(attr_tok)].default_value())
            except ValueError_ as e:
                self.error(default_pos, f"type {tdef.name}: default: {e}")
        return tdef

    def statement(self, stmt: Tree[Token]) -> None:
        cfg = self.config
        kind = str(stmt.data)
        if kind == "include":
            tok = stmt.children[0]
            assert isinstance(tok, Token)
            self.includes.append((unquote(str(tok)), self.pos(tok)))
            cfg.includes.append(unquote(str(tok)))
        elif kind in ("cluster", "system", "group"):
            name_tok = stmt.children[0]
            assert isinstance(name_tok, Token)
            block = self.block(kind, name_tok, stmt)
            if kind == "cluster":
                if cfg.cluster is not None:
                    self.error(block.pos, f"a second cluster block ({cfg.cluster.name} first)")
                cfg.cluster = block
            else:
                table = cfg.systems if kind == "system" else cfg.groups
                if block.name in table:
                    self.error(block.pos, f"{kind} {block.name} is defined twice")
                table[block.name] = block
                if kind == "group":
                    self.current_group = block.name
        elif kind == "resource":
            type_tok, name_tok = stmt.children[0], stmt.children[1]
            assert isinstance(type_tok, Token) and isinstance(name_tok, Token)
            block = self.block(str(type_tok), name_tok, stmt)
            block.pos = self.pos(type_tok)
            block.group = self.current_group
            if self.current_group is None:
                self.error(block.pos, f"resource {block.name} is not inside a group")
            if block.name in cfg.resources:
                self.error(block.pos, f"resource {block.name} is defined twice")
            cfg.resources[block.name] = block
        elif kind == "res_requires":
            parent, _, child = stmt.children
            assert isinstance(parent, Token)
            cfg.links.append(Link(str(parent), str(child), self.pos(parent)))
        elif kind == "group_requires":
            words = [str(t) for t in stmt.children if isinstance(t, Token) and t.type == "WORD"]
            if self.current_group is None:
                self.error(self.pos(stmt), "'requires group' outside a group")
            else:
                cfg.group_links.append(
                    GroupLink(self.current_group, words[0], tuple(words[1:]), self.pos(stmt))
                )
        elif kind == "type_def":
            tdef = self.type_def(stmt)
            if tdef.name in cfg.types:
                first = cfg.types[tdef.name].pos
                self.error(tdef.pos, f"type {tdef.name} is defined twice (first at {first})")
            cfg.types[tdef.name] = tdef


def _is(node: object, data: str) -> bool:
    return isinstance(node, Tree) and node.data == data


def _control_in_values(tree: Tree[Token], text: str, file: str) -> list[Diagnostic]:
    found = (
        controls.in_quoted(str(tok), tok.start_pos, text, file)
        for tok in tree.scan_values(lambda t: isinstance(t, Token) and t.type == "STRING")
        if tok.start_pos is not None
    )
    return [d for d in found if d is not None]


def _unclosed_quote(text: str, file: str) -> Diagnostic | None:
    """On a syntax error: a quoted value that runs over a line end, which is what a missing
    closing quote looks like to the parser, and a better place to look than where it
    stopped. None when there is none (or the text cannot even be cut into tokens)."""
    try:
        for tok in _lark().lex(text):
            if tok.type == "STRING" and "\n" in tok:
                return _control_in_values(Tree("start", [tok]), text, file)[0]
    except UnexpectedInput:
        pass
    return None


def parse_text(
    text: str, file: str, config: Config | None = None
) -> tuple[Config, list[Diagnostic], list[tuple[str, Pos]]]:
    """Parse one file into ``config`` (a new one if None): (config, diagnostics, includes)."""
    cfg = config if config is not None else Config(path=file)
    control = controls.in_file(text, file)
    if control is not None:
        return cfg, [control], []
    diags: list[Diagnostic] = []
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as err:
        line = getattr(err, "line", 0) or 0
        col = getattr(err, "column", 0) or 0
        if isinstance(err, UnexpectedEOF) or line <= 0:
            lines = text.splitlines() or [""]
            line, col = len(lines), len(lines[-1]) + 1
        diags.append(
            _unclosed_quote(text, file) or Diagnostic(Pos(file, line, col), _syntax_message(err))
        )
        return cfg, diags, []
    diags.extend(_control_in_values(tree, text, file))
    builder = _Builder(cfg, file, diags)
    for stmt in tree.children:
        if isinstance(stmt, Tree):
            builder.statement(stmt)
    # Link order carries no meaning; a canonical order makes configs comparable.
    cfg.links.sort(key=lambda lk: (lk.parent, lk.child))
    cfg.group_links.sort(key=lambda gl: (gl.group, gl.child_group, gl.words))
    return cfg, diags, builder.includes


def _path_shown(path: str) -> str:
    # An include's file name is the operator's text: a 100 KB one is not quoted whole.
    return path if len(path) <= 200 and path.isprintable() else excerpt(path)


def load(path: str | os.PathLike[str]) -> tuple[Config, list[Diagnostic]]:
    """Read ``path`` (a directory: its main.cf) and everything it includes. Returns the
    config and its syntax errors; a file that cannot be read is one of them."""
    top = main_cf(os.fspath(path))
    root = Path(top)
    cfg = Config(path=str(root))
    diags: list[Diagnostic] = []
    seen: set[Path] = set()

    def visit(file: Path, shown: str, at: Pos | None, depth: int) -> None:
        try:
            real = file.resolve()
            text = read_config_file(file)
        except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop in resolve()
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            where = at or Pos(shown, 1, 1)
            if isinstance(e, UnreadableFile) and e.at is not None:  # a bad byte in the file
                where = Pos(shown, *e.at)
            diags.append(Diagnostic(where, f"cannot read {_path_shown(shown)}: {why}"))
            return
        if real in seen:
            if at is not None:
                diags.append(Diagnostic(at, f"{shown} is included twice (or includes itself)"))
            return
        if depth > MAX_INCLUDE_DEPTH:
            diags.append(Diagnostic(at or Pos(shown, 1, 1), "includes nest too deep"))
            return
        seen.add(real)
        cfg.files.append(str(real))
        _, file_diags, includes = parse_text(text, shown, cfg)
        diags.extend(file_diags)
        for inc, inc_pos in includes:
            inc_path = Path(inc) if os.path.isabs(inc) else file.parent / inc
            inc_shown = inc if os.path.isabs(inc) else str(Path(shown).parent / inc)
            visit(inc_path, inc_shown, inc_pos, depth + 1)

    visit(root, top, None, 0)
    return cfg, diags


def load_or_raise(path: str | os.PathLike[str]) -> Config:
    cfg, diags = load(path)
    if diags:
        raise ConfigInvalid(diags)
    return cfg
