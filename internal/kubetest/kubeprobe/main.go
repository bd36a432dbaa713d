// Command kubeprobe is the program of the test cluster's probe image
// (kubetest.ProbeImage): a tiny HTTP server, or a client that reports which
// TCP addresses it can connect to. Static, so it runs on an empty base.
//
//	kubeprobe serve :8080                              answers "kubeprobe HOSTNAME KERNEL-RELEASE"
//	kubeprobe write FILE TEXT | cat FILE                 writes TEXT to FILE / prints FILE, then exits
//	kubeprobe wait-denied [-within 30s] ADDR                exits 0 once a connect to ADDR fails (a policy is in force)
//	kubeprobe dial [-delay 2s] [-timeout 3s] ADDR...   prints "ok ADDR" or "fail ADDR: ERR" per address, then "done"
//	kubeprobe forward LISTEN TARGET                    relays every TCP connection to LISTEN to TARGET
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kubeprobe serve ADDR | dial [-delay D] [-timeout D] ADDR...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "dial":
		dial(os.Args[2:])
	case "wait-denied":
		waitDenied(os.Args[2:])
	case "forward":
		if len(os.Args) != 4 {
			os.Exit(2)
		}
		forward(os.Args[2], os.Args[3])
	case "write":
		if len(os.Args) != 4 {
			os.Exit(2)
		}
		if err := os.WriteFile(os.Args[2], []byte(os.Args[3]), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "cat":
		if len(os.Args) != 3 {
			os.Exit(2)
		}
		b, err := os.ReadFile(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.Write(b)
	default:
		fmt.Fprintln(os.Stderr, "kubeprobe: unknown command", os.Args[1])
		os.Exit(2)
	}
}

func serve(args []string) {
	addr := ":8080"
	if len(args) > 0 {
		addr = args[0]
	}
	host, _ := os.Hostname()
	var u syscall.Utsname
	_ = syscall.Uname(&u)
	release := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		release = append(release, byte(c))
	}
	// The kernel release tells a gVisor sandbox ("…gvisor") from runc.
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "kubeprobe %s %s\n", host, release)
	})
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintln(os.Stderr, srv.ListenAndServe())
	os.Exit(1)
}

func dial(args []string) {
	fs := flag.NewFlagSet("dial", flag.ExitOnError)
	delay := fs.Duration("delay", 0, "wait this long before dialing")
	timeout := fs.Duration("timeout", 3*time.Second, "timeout of each dial")
	_ = fs.Parse(args)
	time.Sleep(*delay)
	for _, a := range fs.Args() {
		c, err := net.DialTimeout("tcp", a, *timeout)
		if err != nil {
			fmt.Printf("fail %s: %v\n", a, err)
			continue
		}
		_ = c.Close()
		fmt.Printf("ok %s\n", a)
	}
	fmt.Println("done")
	// Stay up (until stopped) so the test can read the log of a running Pod.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}

// waitDenied dials addr until a connection fails: an init container that
// holds a Pod's other containers until its egress policy is enforced.
func waitDenied(args []string) {
	fs := flag.NewFlagSet("wait-denied", flag.ExitOnError)
	within := fs.Duration("within", 30*time.Second, "give up (exit 1) after this long")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "wait-denied wants one address")
		os.Exit(2)
	}
	deadline := time.Now().Add(*within)
	for n := 1; time.Now().Before(deadline); n++ {
		c, err := net.DialTimeout("tcp", fs.Arg(0), time.Second)
		if err != nil {
			fmt.Printf("denied after %d attempts: %v\n", n, err)
			return
		}
		_ = c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Println("still allowed")
	os.Exit(1)
}

// forward relays TCP connections to listen to target (a sidecar that gives
// a Pod a host-only service, such as the test cluster's registry, at the
// same address the node has it on).
func forward(listen, target string) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			u, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return
			}
			defer u.Close()
			go func() { _, _ = io.Copy(u, c); _ = u.(*net.TCPConn).CloseWrite() }()
			_, _ = io.Copy(c, u)
		}()
	}
}
