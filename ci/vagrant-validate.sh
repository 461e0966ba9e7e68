#!/usr/bin/env bash
# Checks the Vagrant cluster (vagrant/) without booting anything: no box, no network, no
# libvirt daemon, no VirtualBox. Idempotent and leaves nothing behind (Vagrant's home and
# machine state go to a temporary directory). Exit code non-zero on any failure; every
# check is printed, and a missing tool is a failure, not a skip.
#
#   1. bash -n and shellcheck on every shell script under vagrant/ (and on this one and on
#      ci/vagrant-cluster.sh, which boots the cluster);
#   2. `vagrant validate` with each provider active, so that provider's config block is
#      validated too (Vagrant validates only the active provider's block):
#        libvirt:    the vagrant-libvirt plugin (Debian package) validates without a daemon;
#        virtualbox: VirtualBox is not in Debian 12, and Vagrant refuses a provider whose
#                    `VBoxManage --version` it cannot read, so a stub VBoxManage that answers
#                    only `--version` (and fails anything else) stands in for it;
#   3. a control for each provider: a copy of the Vagrantfile with an unknown key in that
#      provider's block must fail validation, proving step 2 looked at the block.
set -euo pipefail
cd "$(dirname "$0")/.."

failures=0
check() { echo "  ok: $*"; }
failed() {
    echo "  FAILED: $*" >&2
    failures=$((failures + 1))
}
need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "ci/vagrant-validate.sh: $1 not found: run ci/setup.sh as root (Debian packages $2)" >&2
        exit 1
    }
}
need vagrant vagrant
need shellcheck shellcheck

work="$(mktemp -d /tmp/beeline-vagrant-validate.XXXXXX)"
trap 'rm -rf "$work"' EXIT
export VAGRANT_HOME="$work/home" VAGRANT_DOTFILE_PATH="$work/dot" VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_LOG=error

mapfile -t scripts < <(find vagrant -name '*.sh' -type f | sort)
scripts+=(ci/vagrant-validate.sh ci/vagrant-cluster.sh)
echo "=== shell scripts: ${#scripts[@]} ($(shellcheck --version | sed -n 's/^version: /shellcheck /p'))"
for script in "${scripts[@]}"; do
    if bash -n "$script"; then check "bash -n $script"; else failed "bash -n $script"; fi
    if shellcheck -x -P "$(dirname "$script")" -S style "$script"; then
        check "shellcheck $script"
    else
        failed "shellcheck $script"
    fi
done

echo "=== vagrant validate ($(vagrant --version))"
plugins="$(vagrant plugin list 2>&1)" || failed "vagrant plugin list: $plugins"
if ! grep -q '^vagrant-libvirt ' <<<"$plugins"; then
    failed "the vagrant-libvirt plugin is not installed (Debian package vagrant-libvirt; run ci/setup.sh)"
fi
stub_dir="$work/vbox-stub"
if command -v VBoxManage >/dev/null 2>&1; then
    vbox_note="the installed VirtualBox"
    vbox_path="$PATH"
else
    mkdir -p "$stub_dir"
    cat >"$stub_dir/VBoxManage" <<'EOF'
#!/bin/sh
# Stand-in for VirtualBox's VBoxManage during `vagrant validate` only (ci/vagrant-validate.sh).
if [ "$1" = "--version" ]; then echo "7.0.20r163906"; exit 0; fi
echo "VBoxManage stub: VirtualBox is not installed; \`VBoxManage $*\` is not available" >&2
exit 1
EOF
    chmod +x "$stub_dir/VBoxManage"
    vbox_note="a VBoxManage stub answering --version only (VirtualBox is not installed)"
    vbox_path="$stub_dir:$PATH"
fi

# validate DIR PROVIDER: vagrant validate in DIR with PROVIDER active; output to $work/out.
validate() {
    local path="$PATH"
    [[ "$2" == virtualbox ]] && path="$vbox_path"
    (cd "$1" && PATH="$path" VAGRANT_DEFAULT_PROVIDER="$2" vagrant validate --no-color >"$work/out" 2>&1)
}

# The control copy: vagrant/ with a key no provider has added to the provider's block.
control="$work/control"
for provider in libvirt virtualbox; do
    note="$(grep '^vagrant-libvirt ' <<<"$plugins" || echo "vagrant-libvirt missing")"
    [[ "$provider" == virtualbox ]] && note="$vbox_note"
    if validate vagrant "$provider"; then
        check "vagrant validate, provider $provider, its config block included ($note): $(tail -n 1 "$work/out")"
    else
        sed 's/^/    /' "$work/out" >&2
        failed "vagrant validate, provider $provider"
    fi

    rm -rf "$control" && cp -r vagrant "$control"
    case "$provider" in
        libvirt) block_start='config.vm.provider :libvirt do |libvirt|' key='libvirt.beeline_control_key = 1' ;;
        virtualbox) block_start='config.vm.provider :virtualbox do |vb|' key='vb.beeline_control_key = 1' ;;
    esac
    grep -qF "$block_start" "$control/Vagrantfile" || failed "control: no '$block_start' in vagrant/Vagrantfile"
    awk -v start="$block_start" -v key="$key" \
        '{ print } index($0, start) { print "    " key }' "$control/Vagrantfile" >"$control/Vagrantfile.new"
    mv "$control/Vagrantfile.new" "$control/Vagrantfile"
    if validate "$control" "$provider"; then
        failed "control: an unknown key in the $provider block passed validation, so the $provider block is not being checked"
    elif grep -q "beeline_control_key" "$work/out"; then
        check "control: an unknown key in the $provider block is rejected"
    else
        sed 's/^/    /' "$work/out" >&2
        failed "control: validation of the $provider control copy failed for another reason"
    fi
done

echo
if ((failures > 0)); then
    echo "vagrant checks: $failures failed" >&2
    exit 1
fi
echo "vagrant checks passed: ${#scripts[@]} scripts (bash -n, shellcheck), vagrant validate for libvirt and virtualbox, 2 controls"
