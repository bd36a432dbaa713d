package egress

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	"github.com/berth-dev/berth/internal/netns"
)

// serveDNS answers the sandbox's DNS queries (its port 53, redirected
// here): an allowed name resolves to gw, where its connections on ports
// 80 and 443 are redirected to the proxy anyway; any other name does not
// exist. The proxy resolves names itself, so nothing a sandbox learns or
// forges here decides where a connection goes.
func (px *Proxy) serveDNS(gw, peer netip.Addr) (io.Closer, error) {
	pc, err := net.ListenPacket("udp4", netip.AddrPortFrom(gw, netns.DNSPort).String())
	if err != nil {
		return nil, err
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if ap, err := netip.ParseAddrPort(w.RemoteAddr().String()); err != nil || ap.Addr().Unmap() != peer {
			return
		}
		for _, question := range q.Question {
			name := strings.TrimSuffix(strings.ToLower(question.Name), ".")
			if !px.p.allowsName(name, 443) && !px.p.allowsName(name, 80) {
				m.Rcode = dns.RcodeNameError
				continue
			}
			if question.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
					A:   gw.AsSlice(),
				})
			}
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	select {
	case <-started:
	case <-done:
		return nil, fmt.Errorf("DNS on %s did not start", gw)
	}
	return closerFunc(func() error {
		err := srv.Shutdown()
		<-done
		return err
	}), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }
