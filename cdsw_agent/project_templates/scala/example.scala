// Run in a Scala session.
val xs = (1 to 10).toList
val squares = xs.map(x => x * x)
println(s"sum of squares: ${squares.sum}")
