module spectra.lab/images/hello

go 1.21
