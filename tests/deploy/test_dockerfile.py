#!/usr/bin/env python3
"""Static checks of Dockerfile.cuda and .dockerignore (no Docker engine needed).

    python3 tests/deploy/test_dockerfile.py

Standard library only. Parses the Dockerfile into stages and instructions (line continuations,
comments, parser directives, heredocs) and checks what the deployment relies on: CUDA 12/13
selectable by build argument, a devel build stage with a cargo-chef dependency layer and
`cargo build --release --features cuda` per CUDA_COMPUTE_CAP entry, a runtime stage on the
matching runtime image with only the built files, a non-root numeric user, the `indus serve`
entrypoint, port 8000, a /health HEALTHCHECK and the /models (HF_HOME) volume. The launcher
script embedded in the Dockerfile is executed against a fake install tree.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile.cuda"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int
    heredocs: list[tuple[str, str]] = field(default_factory=list)  # (delimiter, body)

    def flags(self) -> dict[str, str]:
        """Leading --name=value flags (COPY --from=..., HEALTHCHECK --interval=...)."""
        out = {}
        for tok in self.args.split():
            if not tok.startswith("--"):
                break
            name, _, value = tok[2:].partition("=")
            out[name] = value
        return out

    def json_args(self):
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def find(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")


def parse(text: str) -> tuple[dict[str, str], list[Instruction], list[Stage]]:
    """Returns (global ARG defaults, global instructions, stages)."""
    lines = text.splitlines()
    instructions: list[Instruction] = []
    i = 0
    in_directives = True
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if in_directives and re.match(r"^#\s*\w+\s*=", stripped):
            i += 1
            continue
        in_directives = False
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        parts = []
        while True:
            line = lines[i].rstrip()
            if line.strip().startswith("#") and parts:
                i += 1  # comment line inside a continuation: dropped, as Docker does
                continue
            if line.endswith("\\"):
                parts.append(line[:-1].strip())
                i += 1
                if i >= len(lines):
                    break
                continue
            parts.append(line.strip())
            i += 1
            break
        full = " ".join(p for p in parts if p)
        keyword, _, args = full.partition(" ")
        inst = Instruction(keyword.upper(), args.strip(), start + 1)
        for match in HEREDOC.finditer(args):
            delim = match.group(3)
            body = []
            while i < len(lines) and lines[i].strip() != delim:
                body.append(lines[i])
                i += 1
            i += 1  # the delimiter line
            inst.heredocs.append((delim, "\n".join(body) + "\n"))
        instructions.append(inst)

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    global_insts: list[Instruction] = []
    for inst in instructions:
        if inst.keyword == "FROM":
            toks = [t for t in inst.args.split() if not t.startswith("--")]
            name = toks[2] if len(toks) >= 3 and toks[1].upper() == "AS" else None
            stages.append(Stage(toks[0], name, inst.line))
        elif not stages:
            global_insts.append(inst)
            if inst.keyword == "ARG":
                key, _, default = inst.args.partition("=")
                global_args[key.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(inst)
    return global_args, global_insts, stages


def substitute(text: str, values: dict[str, str]) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, text)


def arg_defaults(stage: Stage) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for inst in stage.find("ARG"):
        key, eq, default = inst.args.partition("=")
        out[key.strip()] = default.strip().strip('"') if eq else None
    return out


def env_values(stage: Stage) -> dict[str, str]:
    out = {}
    for inst in stage.find("ENV"):
        for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|\S+)", inst.args):
            out[m.group(1)] = m.group(2).strip('"')
    return out


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text = DOCKERFILE.read_text()
        cls.global_args, cls.global_insts, cls.stages = parse(cls.text)
        cls.by_name = {s.name: s for s in cls.stages if s.name}
        cls.final = cls.stages[-1]

    def stage_chain(self, stage: Stage) -> list[Stage]:
        """The stage and the stages it is built FROM, down to an external image."""
        chain = [stage]
        while chain[-1].base in self.by_name:
            chain.append(self.by_name[chain[-1].base])
        return chain

    def build_stage(self) -> Stage:
        for stage in self.stages:
            if any("cargo build" in r.args for r in stage.find("RUN")):
                return stage
        self.fail("no stage runs `cargo build`")

    def image_of(self, stage: Stage, cuda: str) -> str:
        values = dict(self.global_args)
        values["CUDA_VERSION"] = cuda
        return substitute(self.stage_chain(stage)[-1].base, values)

    # -- CUDA versions and stages -------------------------------------------------------------

    def test_cuda_version_is_a_build_arg_defaulting_to_12(self):
        self.assertIn("CUDA_VERSION", self.global_args, "ARG CUDA_VERSION before the first FROM")
        self.assertRegex(self.global_args["CUDA_VERSION"], r"^12\.\d+\.\d+$")
        self.assertIn("UBUNTU_VERSION", self.global_args)

    def test_multi_stage_build_on_devel_and_runtime_images(self):
        self.assertGreaterEqual(len(self.stages), 2)
        build = self.build_stage()
        self.assertIsNot(build, self.final, "the final stage must not be the build stage")
        for cuda in ("12.9.1", "13.0.1"):
            ubuntu = self.global_args["UBUNTU_VERSION"]
            self.assertEqual(self.image_of(build, cuda), f"nvidia/cuda:{cuda}-devel-ubuntu{ubuntu}")
            self.assertEqual(self.image_of(self.final, cuda), f"nvidia/cuda:{cuda}-runtime-ubuntu{ubuntu}")

    def test_build_and_runtime_use_the_same_cuda_arg(self):
        build_base = self.stage_chain(self.build_stage())[-1].base
        self.assertIn("${CUDA_VERSION}", build_base)
        self.assertIn("${UBUNTU_VERSION}", build_base)
        self.assertIn("${CUDA_VERSION}", self.final.base)
        self.assertIn("${UBUNTU_VERSION}", self.final.base)

    # -- build stage --------------------------------------------------------------------------

    def test_compute_cap_list_build_arg(self):
        build = self.build_stage()
        args = arg_defaults(build)
        self.assertIn("CUDA_COMPUTE_CAP", args)
        self.assertRegex(args["CUDA_COMPUTE_CAP"] or "", r"^\d+([ ,;]\d+)*$")
        runs = [r.args for r in build.find("RUN") if "cargo build" in r.args]
        self.assertEqual(len(runs), 1)
        run = runs[0]
        self.assertRegex(run, r"for cap in \$\{caps\}")
        self.assertIn('CUDA_COMPUTE_CAP="${cap}"', run)
        self.assertIn('CARGO_TARGET_DIR="/target/sm_${cap}"', run)

    def test_compute_cap_list_splitting(self):
        build = self.build_stage()
        run = next(r.args for r in build.find("RUN") if "cargo build" in r.args)
        split = re.search(r'caps="(\$\(echo "\$\{CUDA_COMPUTE_CAP\}" \| tr [^)]*\))"', run)
        self.assertIsNotNone(split, "the cap list is split with tr")
        bash = shutil.which("bash")
        if not bash:
            self.skipTest("bash not found")
        script = f'CUDA_COMPUTE_CAP="$1"; caps="{split.group(1)}"; for cap in ${{caps}}; do echo "$cap"; done'
        for given in ("80 86 89 90", "80,86,89,90", "80;86;89;90", "80, 86;89 90"):
            out = subprocess.run([bash, "-c", script, "x", given], capture_output=True, text=True, check=True)
            self.assertEqual(out.stdout.split(), ["80", "86", "89", "90"], given)

    def test_cargo_build_release_with_cuda_feature(self):
        run = next(r.args for r in self.build_stage().find("RUN") if "cargo build" in r.args)
        self.assertRegex(run, r"cargo build --release\b")
        self.assertIn("--features cuda", run)
        self.assertIn("--locked", run)

    def test_dependency_cache_layer_before_sources(self):
        build = self.build_stage()
        kinds = []
        for inst in build.instructions:
            if inst.keyword == "COPY" and inst.flags().get("from"):
                kinds.append(("copy-from", inst))
            elif inst.keyword == "COPY" and inst.args.split()[:2] == [".", "."]:
                kinds.append(("copy-sources", inst))
            elif inst.keyword == "RUN" and "cargo chef cook" in inst.args:
                kinds.append(("cook", inst))
            elif inst.keyword == "RUN" and "cargo build" in inst.args:
                kinds.append(("build", inst))
        order = [k for k, _ in kinds]
        self.assertIn("cook", order)
        self.assertLess(order.index("cook"), order.index("copy-sources"), "dependencies build before the sources are copied")
        self.assertLess(order.index("copy-sources"), order.index("build"))
        recipe = [i for k, i in kinds if k == "copy-from" and "recipe.json" in i.args]
        self.assertTrue(recipe, "the cook layer depends only on recipe.json")
        cook = next(i for k, i in kinds if k == "cook")
        self.assertIn("--release", cook.args)
        self.assertIn("--features cuda", cook.args)
        planners = [s for s in self.stages if any("cargo chef prepare" in r.args for r in s.find("RUN"))]
        self.assertTrue(planners, "a planner stage runs cargo chef prepare")

    # -- runtime stage ------------------------------------------------------------------------

    def test_runtime_copies_only_build_outputs(self):
        copies = self.final.find("COPY") + self.final.find("ADD")
        self.assertTrue(copies)
        for inst in copies:
            self.assertEqual(inst.keyword, "COPY", "no ADD in the runtime stage")
            source = inst.flags().get("from")
            self.assertIn(source, self.by_name, f"line {inst.line}: runtime copies only from a build stage")
            self.assertNotIn(" . ", f" {inst.args} ", f"line {inst.line}: no build context in the runtime stage")
        for run in self.final.find("RUN"):
            self.assertNotRegex(run.args, r"\b(cargo|rustup|nvcc)\b")

    def test_non_root_numeric_user(self):
        users = self.final.find("USER")
        self.assertTrue(users, "the runtime stage sets USER")
        user = users[-1].args.split(":")[0]
        self.assertRegex(user, r"^\d+$", "numeric uid, so runAsNonRoot can verify it")
        self.assertNotEqual(int(user), 0)
        created = " ".join(r.args for r in self.final.find("RUN"))
        self.assertRegex(created, rf"useradd\b[^&;]*--uid {user}\b")
        last_user_line = users[-1].line
        for run in self.final.find("RUN"):
            self.assertLess(run.line, last_user_line, "nothing runs as root after USER")

    def test_entrypoint_is_indus_serve(self):
        entry = self.final.find("ENTRYPOINT")
        self.assertEqual(len(entry), 1)
        args = entry[0].json_args()
        self.assertIsNotNone(args, "exec-form ENTRYPOINT, so indus is PID 1 and gets SIGTERM")
        self.assertEqual(Path(args[0]).name, "indus")
        self.assertEqual(args[1:], ["serve"])
        installed = [i for s in self.stages for i in s.find("COPY") if i.heredocs and args[0] in i.args]
        self.assertTrue(installed, f"{args[0]} is written by the build")

    def test_exposes_8000_and_listens_on_all_interfaces(self):
        exposed = " ".join(i.args for i in self.final.find("EXPOSE")).split()
        self.assertIn("8000", exposed)
        env = env_values(self.final)
        self.assertEqual(env.get("INDUS_HOST"), "0.0.0.0")
        self.assertEqual(env.get("INDUS_PORT"), "8000")

    def test_healthcheck_on_health(self):
        checks = self.final.find("HEALTHCHECK")
        self.assertEqual(len(checks), 1)
        hc = checks[0].args
        self.assertIn("/health", hc)
        self.assertRegex(hc, r"INDUS_PORT:-8000|:8000/")
        self.assertIn("--start-period", hc)
        self.assertIn("curl", hc)
        self.assertTrue(any("curl" in r.args for r in self.final.find("RUN")), "curl is installed for it")

    def test_model_cache_volume(self):
        env = env_values(self.final)
        self.assertEqual(env.get("HF_HOME"), "/models")
        volumes = " ".join(i.args for i in self.final.find("VOLUME"))
        self.assertIn("/models", volumes)
        runs = " ".join(r.args for r in self.final.find("RUN"))
        self.assertRegex(runs, r"chown [^ ]*10001[^ ]* /models")

    # -- launcher -----------------------------------------------------------------------------

    def launcher(self) -> str:
        for stage in self.stages:
            for inst in stage.find("COPY"):
                if inst.heredocs and "/usr/local/bin/indus" in inst.args:
                    return inst.heredocs[0][1]
        self.fail("no launcher heredoc")

    def run_launcher(self, caps, env_extra, nvidia_smi=None):
        sh = shutil.which("sh")
        if not sh:
            self.skipTest("sh not found")
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "opt/indus"
            for cap in caps:
                d = root / f"sm_{cap}"
                d.mkdir(parents=True)
                (d / "indus").write_text(f'#!/bin/sh\necho "sm_{cap} $* LD=${{LD_LIBRARY_PATH:-}}"\n')
                (d / "indus").chmod(0o755)
            (root / "stubs").mkdir(parents=True, exist_ok=True)
            script = Path(tmp) / "indus"
            script.write_text(self.launcher().replace("root=/opt/indus", f"root={root}"))
            bindir = Path(tmp) / "bin"
            bindir.mkdir()
            if nvidia_smi is not None:
                (bindir / "nvidia-smi").write_text(f"#!/bin/sh\necho {nvidia_smi}\n")
                (bindir / "nvidia-smi").chmod(0o755)
            env = {"PATH": f"{bindir}:/usr/bin:/bin", **env_extra}
            out = subprocess.run([sh, str(script), "serve", "--port", "8000"], env=env, capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stderr)
            return out.stdout.strip(), out.stderr, root

    def test_launcher_syntax(self):
        sh = shutil.which("sh")
        if not sh:
            self.skipTest("sh not found")
        out = subprocess.run([sh, "-n"], input=self.launcher(), capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_launcher_picks_the_build_for_the_gpu(self):
        caps = ["80", "90", "100"]
        cases = {"90": "sm_90", "80": "sm_80", "86": "sm_80", "89": "sm_80", "100": "sm_100"}
        for want, expected in cases.items():
            stdout, _, _ = self.run_launcher(caps, {"INDUS_CUDA_ARCH": want})
            self.assertTrue(stdout.startswith(f"{expected} serve --port 8000"), (want, stdout))
        stdout, _, _ = self.run_launcher(caps, {}, nvidia_smi="8.6")
        self.assertTrue(stdout.startswith("sm_80 "), stdout)
        stdout, _, _ = self.run_launcher(caps, {})
        self.assertTrue(stdout.startswith("sm_100 "), "no GPU visible: the highest build")
        stdout, err, _ = self.run_launcher(["90"], {"INDUS_CUDA_ARCH": "75"})
        self.assertTrue(stdout.startswith("sm_90 "))
        self.assertIn("no build for compute capability 75", err)

    def test_launcher_adds_the_libcuda_stub_only_without_a_driver(self):
        stdout, _, root = self.run_launcher(["90"], {"INDUS_CUDA_ARCH": "90", "LD_LIBRARY_PATH": ""})
        if "libcuda.so.1 " in subprocess.run(["sh", "-c", "/sbin/ldconfig -p 2>/dev/null || true"],
                                              capture_output=True, text=True).stdout:
            self.skipTest("this machine has a CUDA driver")
        self.assertRegex(stdout, r"LD=.*/opt/indus/stubs$")
        with tempfile.TemporaryDirectory() as drv:
            (Path(drv) / "libcuda.so.1").write_text("")
            stdout, _, _ = self.run_launcher(["90"], {"INDUS_CUDA_ARCH": "90", "LD_LIBRARY_PATH": drv})
            self.assertTrue(stdout.endswith(f"LD={drv}"), stdout)

    # -- .dockerignore ------------------------------------------------------------------------

    @staticmethod
    def _match(pattern: list[str], path: list[str]) -> bool:
        """Docker's .dockerignore matching of one pattern against a path (segment-wise,
        `**` for any number of segments); a pattern matching a parent matches the path."""
        if not pattern:
            return True  # the pattern matched a parent directory
        if not path:
            return all(p == "**" for p in pattern)
        if pattern[0] == "**":
            return DockerfileTest._match(pattern[1:], path) or DockerfileTest._match(pattern, path[1:])
        return fnmatch.fnmatchcase(path[0], pattern[0]) and DockerfileTest._match(pattern[1:], path[1:])

    def ignored(self, path: str) -> bool:
        patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines()]
        patterns = [p for p in patterns if p and not p.startswith("#")]
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").strip("/")
            if self._match(pat.split("/"), path.split("/")):
                result = not negate
        return result

    def test_dockerignore_keeps_build_inputs(self):
        self.assertTrue(DOCKERIGNORE.is_file())
        for path in ("target/release/indus", ".git/HEAD", "kernels/target/x", "helm/indus/Chart.yaml"):
            self.assertTrue(self.ignored(path), f"{path} should not be sent to the daemon")
        needed = ["Cargo.toml", "Cargo.lock", "src/main.rs", "models/Cargo.toml", "kernels/Cargo.toml"]
        for rs in ROOT.glob("**/*.rs"):
            rel = rs.relative_to(ROOT).as_posix()
            if rel.startswith(("target/", ".git/")) or "/target/" in rel:
                continue
            for m in re.finditer(r'include_(?:bytes|str)!\(\s*"([^"]+)"', rs.read_text(errors="replace")):
                target = (rs.parent / m.group(1)).resolve()
                if ROOT in target.parents:
                    needed.append(target.relative_to(ROOT).as_posix())
        for path in needed:
            self.assertFalse(self.ignored(path), f"{path} is needed by the build but ignored")


def main() -> int:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(DockerfileTest)
    runner = unittest.TextTestRunner(verbosity=2, stream=sys.stdout)
    result = runner.run(suite)
    failed = len(result.failures) + len(result.errors)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
