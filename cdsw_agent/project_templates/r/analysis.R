# Run in an R session.
data(mtcars)
print(summary(mtcars[, c("mpg", "hp", "wt")]))
fit <- lm(mpg ~ wt, data = mtcars)
print(coef(fit))
plot(mtcars$wt, mtcars$mpg, main = "mpg by weight", xlab = "weight", ylab = "mpg")
abline(fit)
