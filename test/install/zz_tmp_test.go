package install
import ("testing";"golang.org/x/sys/unix";"unsafe")
func TestX(t *testing.T){
 fd,_:=unix.Socket(unix.AF_INET,unix.SOCK_STREAM,0)
 sig:=unix.TCPMD5Sig{Keylen:4}
 copy(sig.Key[:],"abcd")
 sig.Addr.Family=unix.AF_INET
 copy(sig.Addr.Data[2:6],[]byte{127,0,0,1})
 t.Log(unsafe.Sizeof(sig), unix.TCP_MD5SIG, unix.SetsockoptTCPMD5Sig(fd,unix.IPPROTO_TCP,unix.TCP_MD5SIG,&sig))
}
