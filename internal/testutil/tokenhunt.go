package testutil

// TokenHunt is a Python program that hostile-code tests run inside a
// sandbox to look for a secret everywhere the code can see: the files
// named after the secret, every process's environment and command line,
// and the writable memory of every process it can open. It prints
// "found:" and what held the secret, comma-separated ("found:" alone:
// nothing). Its arguments are TokenHuntArgs.
const TokenHunt = `
import os, sys
a, b = sys.argv[1], sys.argv[2]
tok = (b[::-1] + a[::-1]).encode()
me = os.getpid()
found = []
for f in sys.argv[3:]:
    try:
        if tok in open(f, "rb").read(): found.append(f)
    except OSError:
        pass
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == me:
        continue
    for f in ("environ", "cmdline"):
        try:
            if tok in open("/proc/%s/%s" % (pid, f), "rb").read():
                found.append(pid + "/" + f)
        except OSError:
            pass
    try:
        maps = open("/proc/%s/maps" % pid).read().splitlines()
        mem = open("/proc/%s/mem" % pid, "rb", 0)
    except OSError:
        continue
    for m in maps:
        lo, hi = (int(x, 16) for x in m.split()[0].split("-"))
        if "rw" not in m.split()[1] or hi - lo > 1 << 28:
            continue
        try:
            mem.seek(lo)
            if tok in mem.read(hi - lo):
                found.append(pid + "/mem"); break
        except (OSError, ValueError, OverflowError):
            pass
print("found:" + ",".join(found))
`

// TokenHuntArgs are TokenHunt's arguments for secret and the files to
// read: the secret split in two, each half reversed and the second first,
// so that no command line holds it whole.
func TokenHuntArgs(secret string, files ...string) []string {
	rev := func(s string) string {
		r := []byte(s)
		for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
			r[i], r[j] = r[j], r[i]
		}
		return string(r)
	}
	half := len(secret) / 2
	return append([]string{rev(secret[half:]), rev(secret[:half])}, files...)
}
