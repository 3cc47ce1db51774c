"""An independent implementation of boxcar's check without a key (docs/FORMAT.md, "Checking without a key").

It follows docs/FORMAT.md alone, not the Rust code (`boxcar/src/trust.rs`), so that a
test can run both on the same repository and compare their verdicts. It reads the git
repository with the `git` command and the environment files with approval.py.

Usage:

    history.py [--base REF] REPO    follows every environment from the base to the work tree
    history.py --self-test          builds repositories in a temporary folder and checks the verdicts

Output: one line per problem, `R<n> <path> <where>`, sorted and without duplicates,
where `<where>` is the first 12 hex digits of the commit's id or `worktree` (for R0 and
R4, the base commit and the base version's path); exit 1 if there is any problem, 0 if
none. A refused base (none can be found, it is not HEAD or an ancestor of HEAD, a commit
of the range is cut off by a shallow clone, --base names no commit) prints one line
`BASE <why>` and exits 2. Notes (new environments with their first key id, R5's moves)
go to stderr.

What it covers: the base (1 to 4) and the shallow-clone refusal; snapshots and versions
(the folders of the base, the work tree and every commit of the range, read at every
one of them; services from each commit's own boxcar.toml); the range (every parent of
every merge, in git's topological order, then the work tree as a child of HEAD; the
versions of each parent outside the range, which belong to the base environments they
continue); base and new environments, trusted keys and endorsements; rules R0 to R5
(R2 on the work tree and on approved versions of the range, R3 on the work tree, held
to every approval at its ancestors: the range and the parents outside it).

Not covered: R6 (the work tree's boxcar.toml against each environment file's
`boxcar.services.<service>`), which needs the run-time contract's fields
(docs/CONTRACT.md) and how boxcar derives them from boxcar.toml; this implementation
reads only `name` and `config_dir` of each `[[service]]`. The A1, A2 and A4 to A9 checks
of the work tree's files are R1 here; a work tree's file that cannot be read is no R1
(a reader reports it as unreadable).

Readings of the specification where it leaves a choice (each is listed in the report
that came with this file):

- Endorsements are followed for the environment name they were made for (the message
  names it), not across names; those of a parent outside the range other than the base
  are not followed ("every version at the base or in the range").
- A version without a valid `approval_key` names the pair (public_key, none), which only
  a base environment trusted by its public key alone trusts.
- R2 applies to the versions that continue a base environment of R0 (it trusts nothing).
- A version that fails A0 (`public_key`) cannot be read; a symbolic link is a version
  that cannot be read; boxcar.toml itself is a version when `config_dir` is the root.
- boxcar.toml is read as an environment file is ("Reading a file"); a `[[service]]` whose
  `config_dir` is not a string has the default folder, one whose `name` is not a string
  still gives its folder but names no service, and a boxcar.toml with no `[[service]]`
  has no folder. A `config_dir` is a path from the repository's root (boxcar.toml is
  there), normalised (`./a/` is `a`); one outside the repository is no folder.
- A new environment's "first approved version in the order of the range": ties within
  one commit go to the lower path.

Needs Python 3.11, PyNaCl and git.
"""

from __future__ import annotations

import os
import pathlib
import posixpath
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

# Importing the sibling module would write tests/python/__pycache__ into the tree.
sys.dont_write_bytecode = True
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import approval as ap  # noqa: E402
import nacl.public  # noqa: E402

DEFAULT_FOLDER = "deploy-config"
WORKTREE = "worktree"

# A pair: (public key, approval key), 32 bytes each; the approval key is None for a
# version without a valid one (it predates approvals, or its approval_key is broken).
Pair = tuple[bytes, "bytes | None"]


class Refused(Exception):
    """The base is refused ("The base", and the shallow-clone rule): the check cannot run."""


class NotARepository(Exception):
    """REPO is not a git work tree."""


def short(oid: str) -> str:
    """A commit's id as the output names it: its first 12 hex digits."""
    return oid[:12]


def env_name_ok(name: str) -> bool:
    """An environment name (FORMAT.md, "Frame"): 1 to 32 of a-z 0-9 _ -, starting with a-z."""
    try:
        ap.env_bytes(name)
        return True
    except ap.FileError:
        return False


# ---------------------------------------------------------------------------
# git.


class Git:
    """The repository, read with the `git` command: rev-parse, rev-list, merge-base and cat-file --batch."""

    def __init__(self, repo: str):
        out = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            raise NotARepository(f"{repo} is not a git work tree: {out.stderr.strip()}")
        self.root = out.stdout.rstrip("\n")
        self.oid_len = 32 if self.text("rev-parse", "--show-object-format").strip() == "sha256" else 20
        self._batch: subprocess.Popen | None = None

    def cmd(self, *args: str) -> list[str]:
        return ["git", "-C", self.root, "-c", "core.quotepath=off", "--literal-pathspecs", *args]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), capture_output=True, check=False)

    def text(self, *args: str) -> str:
        """The standard output of a git command that must succeed."""
        out = self.run(*args)
        if out.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)}: {out.stderr.decode(errors='replace').strip()}")
        return out.stdout.decode()

    def commit(self, rev: str) -> str | None:
        """The full id of the commit `rev` names, or None."""
        out = self.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
        return out.stdout.decode().strip() if out.returncode == 0 else None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        out = self.run("merge-base", "--is-ancestor", ancestor, descendant)
        if out.returncode not in (0, 1):
            raise RuntimeError(f"git merge-base --is-ancestor: {out.stderr.decode(errors='replace').strip()}")
        return out.returncode == 0

    def shallow(self) -> set[str]:
        """The commits listed in git's `shallow` file (their parents are cut off)."""
        path = os.path.join(self.root, self.text("rev-parse", "--git-path", "shallow").strip())
        try:
            with open(path, encoding="ascii") as f:
                return {line.strip() for line in f if line.strip()}
        except FileNotFoundError:
            return set()

    def object(self, spec: str) -> tuple[str, bytes] | None:
        """(type, content) of the object `spec` names (`<commit>:<path>`, an id), or None when there is none."""
        if "\n" in spec:
            return None
        if self._batch is None:
            self._batch = subprocess.Popen(self.cmd("cat-file", "--batch"), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._batch.stdin is not None and self._batch.stdout is not None
        self._batch.stdin.write(spec.encode("utf-8", "surrogateescape") + b"\n")
        self._batch.stdin.flush()
        header = self._batch.stdout.readline().rstrip(b"\n")
        parts = header.rsplit(b" ", 2)
        if len(parts) != 3 or not parts[2].isdigit() or parts[1] not in (b"blob", b"tree", b"commit", b"tag"):
            return None  # "<spec> missing", "<spec> ambiguous", ...
        size = int(parts[2])
        data = self._batch.stdout.read(size)
        self._batch.stdout.read(1)
        return parts[1].decode(), data

    def tree(self, spec: str) -> list[tuple[str, str, str]]:
        """The entries (mode, name, id) of the tree `spec` names; none when it is no tree."""
        got = self.object(spec)
        if got is None or got[0] != "tree":
            return []
        data, out, i = got[1], [], 0
        while i < len(data):
            space = data.index(b" ", i)
            nul = data.index(b"\0", space)
            oid = data[nul + 1 : nul + 1 + self.oid_len].hex()
            out.append((data[i:space].decode(), data[space + 1 : nul].decode("utf-8", "surrogateescape"), oid))
            i = nul + 1 + self.oid_len
        return out

    def close(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None
            self._batch.stdin.close()
            self._batch.wait()
            self._batch = None


# ---------------------------------------------------------------------------
# Contracts: the folders and services of a commit (or of the work tree).


@dataclass
class Contract:
    """What a commit's boxcar.toml says of environment files: its folders, and the services of each."""

    folders: set[str]
    services: dict[str, set[str]] = field(default_factory=dict)  # folder -> service names


def normal_folder(config_dir: str) -> str | None:
    """A config_dir as a path in the repository ("" for its root), or None when it is outside it."""
    if config_dir.startswith("/"):
        return None
    path = posixpath.normpath(config_dir)
    if path == ".":
        return ""
    if path == ".." or path.startswith("../"):
        return None
    return path


def read_contract(data: bytes | None) -> Contract:
    """The folders and services of a boxcar.toml, read leniently; `deploy-config` without one or when it is not TOML.

    Only `name` and `config_dir` of each `[[service]]` table are read. A service whose
    `config_dir` is not a string has the default folder; one whose `name` is not a string
    still gives its folder (so a broken contract cannot hide a file) but names no service.
    """
    if data is None:
        return Contract({DEFAULT_FOLDER})
    try:
        document = ap.read_document(data)
    except ap.FileError:
        return Contract({DEFAULT_FOLDER})
    contract = Contract(set())
    services = document.get("service")
    for service in services if isinstance(services, list) else []:
        if not isinstance(service, dict):
            continue
        config_dir = service.get("config_dir", DEFAULT_FOLDER)
        folder = normal_folder(config_dir if isinstance(config_dir, str) else DEFAULT_FOLDER)
        if folder is None:
            continue
        contract.folders.add(folder)
        name = service.get("name")
        if isinstance(name, str):
            contract.services.setdefault(folder, set()).add(name)
    return contract


# ---------------------------------------------------------------------------
# Versions.


@dataclass
class Reading:
    """What a version's content says, for its environment name: keys, chain and approval."""

    readable: bool = False
    has_approval_key: bool = False
    current: Pair | None = None
    named: set = field(default_factory=set)  # the pairs it names: current pair and previous_keys
    chain: list | None = None  # the pairs of its key chain, oldest first, when A8 and A9 pass
    approved: bool = False
    serial: int = 0
    signature: bytes = b""


def lenient_key(read, text: object) -> bytes | None:
    try:
        return read(text)
    except ap.BadKey:
        return None


def read_version(env: str, data: bytes | None) -> Reading:
    """Reads a version's content ("Reading a file", then A0): None (a symbolic link) or a refusal is unreadable."""
    r = Reading()
    if data is None:
        return r
    try:
        document = ap.read_document(data)
        public = ap.file_public_key(document)
    except ap.FileError:
        return r
    r.readable = True
    r.has_approval_key = "approval_key" in document
    approval = lenient_key(ap.ed25519_public_key, document.get("approval_key")) if r.has_approval_key else None
    r.current = (public, approval)
    r.named = {r.current}
    previous = document.get("previous_keys", [])
    for entry in previous if isinstance(previous, list) else []:
        if isinstance(entry, dict):
            pk = lenient_key(ap.x25519_public_key, entry.get("public_key"))
            ak = lenient_key(ap.ed25519_public_key, entry.get("approval_key"))
            if pk is not None and ak is not None:
                r.named.add((pk, ak))
    if approval is not None:
        try:
            chain = ap.key_chain(env, document, public, approval)
            r.chain = [(pk, ak) for pk, ak, _ in chain] + [r.current]
        except ap.ApprovalError:
            r.chain = None
    try:
        ap.verify_document(env, document)
        r.approved = True
        r.serial, r.signature = ap.file_approval(document)
    except (ap.ApprovalError, ap.FileError):
        r.approved = False
    return r


@dataclass(eq=False)
class Version:
    """One environment file at one commit of the range, a parent outside it (the base too), or the work tree."""

    where: str  # a commit id, or WORKTREE
    index: int  # its place in the range: -1 outside it (the base too), len(range) for the work tree
    path: str
    folder: str
    env: str
    services: frozenset
    r: Reading
    envs: list = field(default_factory=list)  # the environments it belongs to

    @property
    def worktree(self) -> bool:
        return self.where == WORKTREE

    @property
    def label(self) -> str:
        return WORKTREE if self.worktree else short(self.where)


class Snapshots:
    """Reads the versions of every commit (and the work tree) in the given folders, caching by content."""

    def __init__(self, git: Git | None, root: str):
        self.git, self.root = git, root
        self.cache: dict[tuple[str, bytes], Reading] = {}

    def contract(self, commit: str | None) -> Contract:
        """The contract of a commit, or of the work tree (None)."""
        if commit is None:
            path = os.path.join(self.root, "boxcar.toml")
            try:
                with open(path, "rb") as f:
                    return read_contract(f.read(ap.MAX_FILE_LEN + 1))
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return read_contract(None)
        assert self.git is not None
        got = self.git.object(f"{commit}:boxcar.toml")
        return read_contract(got[1] if got is not None and got[0] == "blob" else None)

    def reading(self, env: str, data: bytes | None, key: bytes) -> Reading:
        if (env, key) not in self.cache:
            self.cache[(env, key)] = read_version(env, data)
        return self.cache[(env, key)]

    def files(self, commit: str | None, folder: str) -> list[tuple[str, str, bytes | None, bytes]]:
        """(path, env, content or None for a symbolic link, cache key) of each environment file directly in a folder."""
        out = []
        if commit is None:
            directory = os.path.join(self.root, folder) if folder else self.root
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                return []
            for entry in entries:
                env = entry.name[: -len(".toml")] if entry.name.endswith(".toml") else ""
                if not env_name_ok(env):
                    continue
                path = posixpath.join(folder, entry.name) if folder else entry.name
                if entry.is_symlink():
                    out.append((path, env, None, b"symlink"))
                elif entry.is_file(follow_symlinks=False):
                    with open(entry.path, "rb") as f:
                        data = f.read(ap.MAX_FILE_LEN + 1)
                    out.append((path, env, data, b"data:" + data))
            return out
        assert self.git is not None
        for mode, name, oid in self.git.tree(f"{commit}:{folder}"):
            env = name[: -len(".toml")] if name.endswith(".toml") else ""
            if not env_name_ok(env) or mode not in ("100644", "100755", "120000"):
                continue
            path = posixpath.join(folder, name) if folder else name
            if mode == "120000":
                out.append((path, env, None, b"symlink"))
            else:
                got = self.git.object(oid)
                out.append((path, env, got[1] if got else None, b"blob:" + oid.encode()))
        return out

    def versions(self, commit: str | None, index: int, folders: set[str], contract: Contract) -> list[Version]:
        """The versions of a commit (None: the work tree) in the folders read, with its own contract's services."""
        out = []
        for folder in sorted(folders):
            for path, env, data, key in self.files(commit, folder):
                services = frozenset(contract.services.get(folder, ()))
                out.append(
                    Version(commit or WORKTREE, index, path, folder, env, services, self.reading(env, data, key))
                )
        return out


# ---------------------------------------------------------------------------
# Environments and trust.


@dataclass(eq=False)
class Environment:
    """A base environment (its version at the base) or a new one (its versions in the range)."""

    env: str
    base: Version | None  # the base version of a base environment
    members: list = field(default_factory=list)  # its versions in the range, in the order of the range
    earlier: list = field(default_factory=list)  # its versions at the parents outside the range (the base's too)
    by_public_key: bytes | None = None  # a base version without approval_key: trusted by public key alone
    trusted: set = field(default_factory=set)  # trusted pairs (followed through endorsements)
    has_keys: bool = False  # False: R0, or a new environment with no approved version

    def trusts(self, pair: Pair) -> bool:
        """Whether a pair is trusted for this environment."""
        if self.by_public_key is not None:
            return pair[0] == self.by_public_key
        return pair in self.trusted


def endorsements(versions: list[Version]) -> dict[str, dict[Pair, set[Pair]]]:
    """Per environment name, each pair's endorsed pairs, from every version whose key chain verifies (A8, A9).

    An endorsement's message names the environment, so it is followed for that name only.
    """
    out: dict[str, dict[Pair, set[Pair]]] = {}
    for v in versions:
        chain = v.r.chain
        if chain:
            for old, new in zip(chain, chain[1:]):
                out.setdefault(v.env, {}).setdefault(old, set()).add(new)
    return out


def close_trust(start: list[Pair], edges: dict[Pair, set[Pair]]) -> set[Pair]:
    """The pairs trusted from `start`: those, and every pair a trusted pair endorsed, until nothing changes."""
    trusted, todo = set(start), list(start)
    while todo:
        for new in edges.get(todo.pop(), ()):
            if new not in trusted:
                trusted.add(new)
                todo.append(new)
    return trusted


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


# ---------------------------------------------------------------------------
# The check.


@dataclass
class Verdict:
    problems: set = field(default_factory=set)  # (rule, path, where)
    notes: list = field(default_factory=list)

    def lines(self) -> list[str]:
        return sorted(f"{rule} {path} {where}" for rule, path, where in self.problems)


def find_base(git: Git, base_ref: str | None) -> tuple[str | None, str | None]:
    """(base, HEAD): the base as "The base" says, or Refused; (None, None) in a repository with no commit."""
    head = git.commit("HEAD")
    if base_ref is not None:
        base = git.commit(base_ref)
        if base is None:
            raise Refused(f"--base {base_ref} does not name a commit")
        if head is None or not git.is_ancestor(base, head):
            raise Refused(f"--base {base_ref} is not HEAD or an ancestor of HEAD; pass the merge base with the branch the change goes to")
        return base, head
    if head is None:
        return None, None
    out = git.run("merge-base", "HEAD", "origin/HEAD")
    if out.returncode != 0 or not out.stdout.strip():
        raise Refused(
            "no base: HEAD has no merge base with origin/HEAD; pass --base REF "
            "(the commit the change starts from, such as the target branch's merge base)"
        )
    return out.stdout.decode().split()[0], head


def check(repo: str, base_ref: str | None = None) -> Verdict:
    """Follows every environment from the base to the work tree; returns the problems (R0 to R5) and notes."""
    git = Git(repo)
    try:
        return _check(git, base_ref)
    finally:
        git.close()


def _check(git: Git, base_ref: str | None) -> Verdict:
    verdict = Verdict()
    base, head = find_base(git, base_ref)

    # The range, oldest first, with each commit's parents; then the work tree.
    commits: list[str] = []
    parents: list[list[str]] = []
    if base is not None:
        listing = git.text("rev-list", "--topo-order", "--reverse", "--parents", f"{base}..{head}")
        for line in listing.splitlines():
            ids = line.split()
            commits.append(ids[0])
            parents.append(ids[1:])
        cut = git.shallow() & set(commits)
        if cut:
            raise Refused(
                f"commit {short(sorted(cut)[0])} of the range is cut off by a shallow clone: "
                "fetch the whole history between the base and HEAD"
            )
    # The parents outside the range (the base, or commits the base descends from): only
    # their own versions are read, and those belong to the base environments they continue.
    in_range = set(commits)
    outside: list[str] = []
    for ps in [*parents, [head] if head else []]:
        for p in ps:
            if p not in in_range and p not in outside:
                outside.append(p)
    assert base is None or base in outside

    # Folders: those of the base, the work tree and every commit of the range, read at every one.
    snapshots = Snapshots(git, git.root)
    contracts = {c: snapshots.contract(c) for c in [*commits, *outside]}
    worktree_contract = snapshots.contract(None)
    folders = set(worktree_contract.folders)
    for c in [*commits, *([base] if base else [])]:
        folders |= contracts[c].folders

    outside_versions = {c: snapshots.versions(c, -1, folders, contracts[c]) for c in outside}
    base_versions = outside_versions[base] if base else []
    range_versions: list[Version] = []
    for i, c in enumerate(commits):
        range_versions += snapshots.versions(c, i, folders, contracts[c])
    range_versions += snapshots.versions(None, len(commits), folders, worktree_contract)
    # Endorsements come from the versions at the base and in the range (the work tree's too).
    edges = endorsements(base_versions + range_versions)

    # Base environments and their trusted keys.
    base_envs: list[Environment] = []
    for bv in base_versions:
        x = Environment(bv.env, bv)
        if not bv.r.readable:
            verdict.problems.add(("R0", bv.path, short(base)))
        elif not bv.r.has_approval_key:
            x.by_public_key, x.has_keys = bv.r.current[0], True
        elif bv.r.chain is None:
            verdict.problems.add(("R0", bv.path, short(base)))
        else:
            x.trusted, x.has_keys = close_trust(bv.r.chain, edges.get(bv.env, {})), True
        base_envs.append(x)

    # Which base environments each version continues; the others of the range form new environments.
    def continues(v: Version, x: Environment) -> bool:
        return v.env == x.env and (
            v.path == x.base.path or bool(v.services & x.base.services) or any(x.trusts(p) for p in v.r.named)
        )

    for c in outside:
        for v in outside_versions[c]:
            for x in base_envs:
                if continues(v, x):
                    x.earlier.append(v)
    orphans: list[Version] = []
    for v in range_versions:
        for x in base_envs:
            if continues(v, x):
                v.envs.append(x)
                x.members.append(v)
        if not v.envs:
            orphans.append(v)
    groups = UnionFind(len(orphans))
    seen: dict[tuple, int] = {}
    for i, v in enumerate(orphans):
        keys = [("path", v.path)] + [("service", s) for s in v.services] + [("pair", p) for p in v.r.named]
        for key in keys:
            key = (v.env, *key)
            if key in seen:
                groups.union(seen[key], i)
            else:
                seen[key] = i
    new_envs: dict[int, Environment] = {}
    for i, v in enumerate(orphans):
        x = new_envs.setdefault(groups.find(i), Environment(v.env, None))
        x.members.append(v)
        v.envs.append(x)
    for x in new_envs.values():
        x.members.sort(key=lambda v: (v.index, v.path))
        first = next((v for v in x.members if v.r.approved), None)
        if first is not None:
            x.trusted, x.has_keys = close_trust(first.r.chain, edges.get(x.env, {})), True
        shown = first or next((v for v in x.members if v.r.readable), None)
        key = ap.key_id(shown.r.current[0]) if shown else "none (no readable version)"
        state = "" if first else ", no approved version"
        verdict.notes.append(
            f"new environment {x.env} at {x.members[0].path}: first key {key}, brought by {shown.label if shown else x.members[0].label}{state}"
        )

    # The rules hold the work tree's versions; the earlier ones are what they are held to.
    for v in range_versions:
        if v.worktree and v.r.readable and not v.r.approved:
            verdict.problems.add(("R1", v.path, WORKTREE))
        for x in v.envs:
            # R2: every pair the work tree's version, or an approved earlier one in the range, names is trusted.
            if (v.r.approved or v.worktree) and (x.base is not None or x.has_keys):
                if not all(x.trusts(p) for p in v.r.named):
                    verdict.problems.add(("R2", v.path, v.label))
            # R3: the work tree's serial is above every approval at its ancestors, or the same approval.
            if v.worktree and v.r.approved and x.trusts(v.r.current):
                before = [
                    w
                    for w in [*x.members, *x.earlier]
                    if not w.worktree and w.r.approved and x.trusts(w.r.current)
                ]
                if before:
                    top = max(w.r.serial for w in before)
                    same = all(w.r.signature == v.r.signature for w in before if w.r.serial == top)
                    if v.r.serial < top or (v.r.serial == top and not same):
                        verdict.problems.add(("R3", v.path, WORKTREE))

    # R4 and R5: what the work tree did with each base environment.
    for x in base_envs:
        now = [v for v in x.members if v.worktree]
        if not now:
            verdict.problems.add(("R4", x.base.path, short(base)))
        for v in now:
            if v.path != x.base.path:
                verdict.notes.append(f"{x.env}: moved from {x.base.path} to {v.path} [R5]")
            if v.services != x.base.services:
                was, became = ", ".join(sorted(x.base.services)) or "none", ", ".join(sorted(v.services)) or "none"
                verdict.notes.append(f"{v.path}: opened by other services now ({was} before, {became} now) [R5]")
    return verdict


# ---------------------------------------------------------------------------
# Self-test: repositories built in a temporary folder.


class Keys:
    """A throwaway key pair, made at run time and never written to a repository."""

    def __init__(self) -> None:
        self.sk = bytes(nacl.public.PrivateKey.generate())
        self.pk = ap.public_key(self.sk)
        self.ak = ap.approval_key(self.sk)


def env_file(env: str, keys: Keys, serial: int | None, setting: str = "a", previous: list[Keys] = (), signer: Keys | None = None) -> str:
    """An environment file for `keys`, approved with `serial` by `signer` (default: `keys`), or unapproved (None).

    `previous` is the key chain before `keys`, oldest first, each endorsing the next.
    """
    text = f'public_key = "{ap.b64(keys.pk)}"\napproval_key = "{ap.b64(keys.ak)}"\n\n[bot]\nsetting = "{setting}"\n'
    chain = [*previous, keys]
    for old, new in zip(chain, chain[1:]):
        endorsement = ap.b64(ap.endorse(env, old.sk, new.pk, new.ak))
        text += f'\n[[previous_keys]]\npublic_key = "{ap.b64(old.pk)}"\napproval_key = "{ap.b64(old.ak)}"\nendorsement = "{endorsement}"\n'
    if serial is not None:
        signature = ap.sign(env, ap.read_document(text), serial, (signer or keys).sk)
        text += f'\n[approval]\nserial = {serial}\nsignature = "{ap.b64(signature)}"\n'
    return text


class Repo:
    """A scratch git repository for the self-test."""

    def __init__(self, parent: str, name: str):
        self.path = os.path.join(parent, name)
        os.makedirs(self.path)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        config = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false"]
        out = subprocess.run(
            ["git", "-C", self.path, *config, *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull},
        )
        if out.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout.strip()

    def write(self, path: str, text: str) -> None:
        full = os.path.join(self.path, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    def commit(self, message: str, files: dict[str, str | None] | None = None) -> str:
        """Writes (or with None, removes) files, {path: text}, and commits them; returns the commit's id."""
        for path, text in (files or {}).items():
            if text is None:
                self.git("rm", "-q", path)
            else:
                self.write(path, text)
                self.git("add", path)
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


def self_test() -> int:
    """Builds repositories for the cases FORMAT.md's rules are about and compares the verdicts."""
    failures = 0

    def expect(name: str, repo: Repo, expected: set[str] | str, base: str | None = None) -> None:
        nonlocal failures
        try:
            verdict = check(repo.path, base)
            got: set[str] | str = set(verdict.lines())
        except Refused as e:
            got = "BASE"
            verdict = None
            detail = str(e)
        if got == expected:
            print(f"ok      {name}")
        else:
            failures += 1
            print(f"FAILED  {name}: expected {expected}, got {got}")
        if verdict is not None:
            for note in verdict.notes:
                print(f"        note: {note}")
        else:
            print(f"        BASE {detail}")

    with tempfile.TemporaryDirectory(prefix="boxcar-history-") as tmp:
        p = "deploy-config/production.toml"
        s = "deploy-config/staging.toml"

        # A clean history, the base found through origin/HEAD.
        alice, bob, carol, mallory = Keys(), Keys(), Keys(), Keys()
        r = Repo(tmp, "clean")
        base = r.commit("base", {p: env_file("production", alice, 1)})
        r.git("update-ref", "refs/remotes/origin/main", base)
        r.git("symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
        r.commit("a change, not yet approved", {p: env_file("production", alice, None, "b")})
        r.commit("approved", {p: env_file("production", alice, 2, "b")})
        expect("clean history (base from origin/HEAD)", r, set())
        r.write(p, env_file("production", alice, 2, "b").replace("\n", "\r\n"))
        expect("work tree checked out with CR LF (core.autocrlf): the same content (pass)", r, set())
        r.write(p, env_file("production", alice, None, "c"))
        expect("work tree not approved (R1)", r, {f"R1 {p} worktree"})

        # A new environment brought by the change, then its key swapped.
        r = Repo(tmp, "new-environment")
        base = r.commit("base", {p: env_file("production", alice, 1)})
        r.commit("staging, not yet approved", {s: env_file("staging", bob, None)})
        r.commit("staging approved", {s: env_file("staging", bob, 1)})
        expect("new environment (pass, a note names its first key)", r, set(), base)
        r.write(s, env_file("staging", mallory, 2))
        expect("new environment, key swapped after its first approval (R2)", r, {f"R2 {s} worktree"}, base)

        # A key swapped by a parentless commit merged with -s ours, then the attacker's file committed.
        r = Repo(tmp, "swap")
        base = r.commit("base", {p: env_file("production", alice, 1)})
        r.git("checkout", "-q", "--orphan", "evil")
        r.git("rm", "-rq", "--cached", ".")
        root = r.commit("evil root", {p: env_file("production", mallory, 9)})
        r.git("checkout", "-q", "-f", "main")
        r.git("merge", "-q", "--allow-unrelated-histories", "-s", "ours", "-m", "merge", "evil")
        last = r.commit("swap", {p: env_file("production", mallory, 9)})
        expect(
            "key swapped through an unrelated root (R2)",
            r,
            {f"R2 {p} {short(root)}", f"R2 {p} {short(last)}", f"R2 {p} worktree"},
            base,
        )

        # An older approved version brought back through such a merge.
        r = Repo(tmp, "replay")
        old = env_file("production", alice, 1, "old")
        r.commit("first", {p: old})
        base = r.commit("second", {p: env_file("production", alice, 2, "new")})
        r.git("checkout", "-q", "--orphan", "evil")
        r.git("rm", "-rq", "--cached", ".")
        root = r.commit("evil root", {p: old})
        r.git("checkout", "-q", "-f", "main")
        r.git("merge", "-q", "--allow-unrelated-histories", "-s", "ours", "-m", "merge", "evil")
        last = r.commit("replay", {p: old})
        expect("older approved version replayed through an unrelated root (R3, on the work tree only)", r, {f"R3 {p} worktree"}, base)
        assert root and last

        # A moved folder: config_dir changed in boxcar.toml, the file moved.
        contract = '[[service]]\nname = "app"\n'
        moved = '[[service]]\nname = "app"\nconfig_dir = "config"\n'
        r = Repo(tmp, "moved")
        older = env_file("production", alice, 1, "old")
        r.commit("first", {"boxcar.toml": contract, p: older})
        current = env_file("production", alice, 2, "new")
        base = r.commit("second", {p: current})
        r.commit("move", {"boxcar.toml": moved, p: None, "config/production.toml": current})
        expect("moved folder, same content (pass, R5 note)", r, set(), base)
        last = r.commit("older version in the new place", {"config/production.toml": older})
        expect("moved folder, older version put there (R3)", r, {"R3 config/production.toml worktree"}, base)
        assert last

        # A moved folder whose file another key took over: continued by service, R2.
        r = Repo(tmp, "moved-swap")
        base = r.commit("first", {"boxcar.toml": contract, p: env_file("production", alice, 1)})
        last = r.commit("move", {"boxcar.toml": moved, p: None, "config/production.toml": env_file("production", mallory, 1)})
        expect("moved folder, key swapped (R2)", r, {f"R2 config/production.toml {short(last)}", "R2 config/production.toml worktree"}, base)

        # A rotation endorsed by the old key; and one that is not.
        r = Repo(tmp, "rotation")
        base = r.commit("base", {p: env_file("production", alice, 3)})
        r.write(p, env_file("production", bob, 5))
        expect("rotation the old key did not endorse (R2)", r, {f"R2 {p} worktree"}, base)
        r.commit("rotate", {p: env_file("production", bob, 4, previous=[alice])})
        expect("rotation endorsed by the old key (pass)", r, set(), base)
        r.commit("rotate again", {p: env_file("production", carol, 5, previous=[alice, bob])})
        r.commit("drop the chain", {p: env_file("production", carol, 6)})
        expect("twice rotated, then the chain dropped: endorsements in history still count (pass)", r, set(), base)
        r.write(p, env_file("production", carol, 5, "replayed", previous=[alice, bob]))
        expect("serial 5 after 6 under the rotated key (R3)", r, {f"R3 {p} worktree"}, base)

        # Two approvals of the same serial meeting in a merge.
        r = Repo(tmp, "same-serial")
        base = r.commit("base", {p: env_file("production", alice, 1)})
        r.git("checkout", "-q", "-b", "a")
        a = r.commit("a", {p: env_file("production", alice, 2, "a")})
        r.git("checkout", "-q", "main")
        b = r.commit("b", {p: env_file("production", alice, 2, "b")})
        r.git("merge", "-q", "-s", "ours", "-m", "merge a", "a")
        merge = r.head()
        expect("two approvals of serial 2 meet in a merge (R3)", r, {f"R3 {p} worktree"}, base)
        r.commit("approved again", {p: env_file("production", alice, 3, "b")})
        expect("the merged file approved again, serial 3 (pass)", r, set(), base)
        assert a != b and merge

        # A deleted environment.
        r = Repo(tmp, "deleted")
        base = r.commit("base", {p: env_file("production", alice, 1), s: env_file("staging", bob, 1)})
        r.commit("remove staging", {s: None})
        expect("deleted environment (R4)", r, {f"R4 {s} {short(base)}"}, base)

        # A base version from before approvals: trusted by its public key alone.
        r = Repo(tmp, "pre-approval")
        base = r.commit("base", {p: f'public_key = "{ap.b64(alice.pk)}"\n'})
        r.write(p, env_file("production", alice, 1))
        expect("first approval of a file from before approvals (pass)", r, set(), base)
        r.write(p, env_file("production", mallory, 1))
        expect("first approval with another key (R2)", r, {f"R2 {p} worktree"}, base)

        # A broken base version.
        r = Repo(tmp, "broken-base")
        base = r.commit("base", {p: "public_key = 1\n"})
        expect("base version that cannot be read (R0; the work tree's cannot be read either, which is no R1)", r, {f"R0 {p} {short(base)}"}, base)

        # No base at all, and the refusals of --base.
        r = Repo(tmp, "no-base")
        first = r.commit("first", {p: env_file("production", alice, 1)})
        expect("no base (no origin/HEAD)", r, "BASE")
        expect("--base that names no commit", r, "BASE", "no-such-ref")
        r.git("checkout", "-q", "--orphan", "other")
        other = r.commit("unrelated")
        r.git("checkout", "-q", "-f", "main")
        expect("--base that is not an ancestor of HEAD", r, "BASE", other)
        expect("--base HEAD (pass)", r, set(), first)

        # A shallow clone cuts the range: a side branch merged in is cut off below its tip.
        r2 = Repo(tmp, "shallow-source")
        r2.commit("1", {p: env_file("production", alice, 1)})
        base = r2.commit("2", {p: env_file("production", alice, 2)})
        r2.git("checkout", "-q", "-b", "side")
        for i in range(1, 4):
            r2.commit(f"s{i}", {f"side-{i}": f"{i}"})
        r2.git("checkout", "-q", "main")
        r2.commit("3", {p: env_file("production", alice, 3)})
        r2.git("merge", "-q", "-m", "merge side", "side")
        clone = os.path.join(tmp, "shallow")
        subprocess.run(["git", "clone", "-q", "--depth", "3", f"file://{r2.path}", clone], check=True, capture_output=True)
        shallow = Repo.__new__(Repo)
        shallow.path = clone
        expect("shallow clone: a commit of the range is cut off (BASE)", shallow, "BASE", base)
        expect("the same range, whole (pass)", r2, set(), base)

        # A branch forked before the base, which still holds the version the base replaced.
        r = Repo(tmp, "forked-before-base")
        r.commit("1", {p: env_file("production", alice, 1)})
        r.git("checkout", "-q", "-b", "side")
        r.commit("side work", {"README": "side"})
        r.git("checkout", "-q", "main")
        base = r.commit("2", {p: env_file("production", alice, 2)})
        r.git("merge", "-q", "-m", "merge side", "side")
        expect("branch forked before the base, merged (pass: earlier commits are not held to R3)", r, set(), base)
        r.git("checkout", "-q", "side", "--", p)
        expect("the side branch's older version taken into the work tree (R3)", r, {f"R3 {p} worktree"}, base)

        # The parents outside the range are read: an approval there counts for R3.
        r = Repo(tmp, "outside-parent")
        two = env_file("production", alice, 2, "two")
        r.commit("serial 2", {p: two})
        r.git("checkout", "-q", "-b", "side")
        r.git("checkout", "-q", "main")
        r.commit("serial 3", {p: env_file("production", alice, 3, "three")})
        r.git("checkout", "-q", "side")
        r.git("merge", "-q", "main")  # side now at serial 3 too
        r.git("checkout", "-q", "main")
        base = r.commit("reverted to serial 2, unreviewed", {p: two})
        r.git("checkout", "-q", "side")
        r.commit("side work", {p: env_file("production", alice, None, "edited")})
        r.git("merge", "-q", "-s", "ours", "-m", "merge main", "main")
        r.git("checkout", "-q", base, "--", p)
        expect("serial 3 at a parent outside the range, serial 2 in the work tree (R3)", r, {f"R3 {p} worktree"}, base)

        # A key swapped, then swapped back: R2 on the commit that held it.
        r = Repo(tmp, "swapped-back")
        base = r.commit("base", {p: env_file("production", alice, 1)})
        bad = r.commit("swap", {p: env_file("production", mallory, 2)})
        r.commit("swap back", {p: env_file("production", alice, 3)})
        expect("key swapped and swapped back (R2 on the commit that held it)", r, {f"R2 {p} {short(bad)}"}, base)

        # A repository with no commit: every environment is new.
        r = Repo(tmp, "empty")
        r.write(p, env_file("production", alice, 1))
        r.write(s, env_file("staging", bob, None))
        expect("no commit yet: every environment new (R1 for the unapproved one)", r, {f"R1 {s} worktree"})
        os.remove(os.path.join(r.path, s))
        expect("no commit yet: pass", r, set())

    print(f"{'FAILED' if failures else 'passed'}: {failures} failure(s)")
    return 1 if failures else 0


# ---------------------------------------------------------------------------
# Command line.


def main(argv: list[str]) -> int:
    args = argv[1:]
    if args == ["--self-test"]:
        return self_test()
    base_ref = None
    if len(args) == 3 and args[0] == "--base":
        base_ref, args = args[1], args[2:]
    elif len(args) == 3 and args[1] == "--base":
        base_ref, args = args[2], args[:1]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        verdict = check(args[0], base_ref)
    except Refused as e:
        print(f"BASE {e}")
        return 2
    except NotARepository as e:
        print(e, file=sys.stderr)
        return 2
    for note in verdict.notes:
        print(f"note: {note}", file=sys.stderr)
    for line in verdict.lines():
        print(line)
    return 1 if verdict.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
